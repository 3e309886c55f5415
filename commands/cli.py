"""The `oncall-bot` command."""

from __future__ import annotations

import argparse
import json
import os
import sys

from bot.config import ConfigError, OncallConfig, load_settings

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from bot.logs import configure_logging
    from commands.server import build, create_app

    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"oncall-bot: configuration error: {exc}", file=sys.stderr)
        return 2
    app = create_app(build(settings))
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, proxy_headers=True)
    return 0


def _config_schema(_: argparse.Namespace) -> int:
    print(json.dumps(OncallConfig.model_json_schema(), indent=2))
    return 0


def _config_check(args: argparse.Namespace) -> int:
    from bot.config import load_config_file

    try:
        load_config_file(args.file)
    except ConfigError as exc:
        print(f"oncall-bot: {exc}", file=sys.stderr)
        return 1
    print(f"{args.file}: ok")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="oncall-bot", description="ChatOps for on-call engineers")
    sub = root.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the bot (Slack events, Alertmanager webhook, health, metrics)")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=3000)
    serve.set_defaults(run=_serve)
    config = sub.add_parser("config", help="the ONCALL_CONFIG file").add_subparsers(dest="what", required=True)
    config.add_parser("schema", help="print the JSON Schema of the config file").set_defaults(run=_config_schema)
    check = config.add_parser("check", help="validate a config file")
    check.add_argument("file")
    check.set_defaults(run=_config_check)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
