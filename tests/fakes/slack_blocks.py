"""Block Kit validation as Slack's API applies it (platform.md §1.6). Returns problems in
Slack's own style: 'what [json-pointer:/blocks/N/...]'. Characters are counted, not bytes."""

from __future__ import annotations

from typing import Any

MESSAGE_BLOCKS = 50
VIEW_BLOCKS = 100
_TEXT_LIMITS = {"section": 3000, "header": 150}
_KNOWN = {"section", "header", "divider", "context", "actions", "image", "rich_text", "markdown", "input", "file"}


def validate_blocks(blocks: Any, max_blocks: int = MESSAGE_BLOCKS) -> list[str]:
    if not isinstance(blocks, list):
        return ["must be an array [json-pointer:/blocks]"]
    problems: list[str] = []
    if len(blocks) > max_blocks:
        problems.append(f"no more than {max_blocks} items allowed [json-pointer:/blocks]")
    block_ids: set[str] = set()
    action_ids: set[str] = set()
    for index, block in enumerate(blocks):
        where = f"/blocks/{index}"
        if not isinstance(block, dict) or block.get("type") not in _KNOWN:
            problems.append(f"unsupported type [json-pointer:{where}/type]")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if len(block_id) > 255:
                problems.append(f"must be less than 256 characters [json-pointer:{where}/block_id]")
            if block_id in block_ids:
                problems.append(f"duplicate block_id [json-pointer:{where}/block_id]")
            block_ids.add(block_id)
        problems += _block(block, where, action_ids)
    return problems


def _text(obj: Any, where: str, limit: int, *, plain_only: bool = False) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in ("plain_text", "mrkdwn"):
        return [f"must be a text object [json-pointer:{where}]"]
    if plain_only and obj["type"] != "plain_text":
        return [f"must be plain_text [json-pointer:{where}/type]"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"must be more than 0 characters [json-pointer:{where}/text]"]
    if len(text) > limit:
        return [f"must be less than {limit + 1} characters [json-pointer:{where}/text]"]
    return []


def _block(block: dict[str, Any], where: str, action_ids: set[str]) -> list[str]:
    kind = block["type"]
    if kind == "header":
        return _text(block.get("text"), f"{where}/text", 150, plain_only=True)
    if kind == "section":
        problems: list[str] = []
        if "text" not in block and "fields" not in block:
            problems.append(f"must provide text or fields [json-pointer:{where}]")
        if "text" in block:
            problems += _text(block["text"], f"{where}/text", 3000)
        fields = block.get("fields") or []
        if len(fields) > 10:
            problems.append(f"no more than 10 items allowed [json-pointer:{where}/fields]")
        for i, item in enumerate(fields):
            problems += _text(item, f"{where}/fields/{i}", 2000)
        if "accessory" in block:
            problems += _element(block["accessory"], f"{where}/accessory", action_ids)
        return problems
    if kind == "context":
        elements = block.get("elements") or []
        problems = [] if 0 < len(elements) <= 10 else [f"must have 1-10 elements [json-pointer:{where}/elements]"]
        for i, item in enumerate(elements):
            if item.get("type") == "image":
                continue
            problems += _text(item, f"{where}/elements/{i}", 3000)
        return problems
    if kind == "actions":
        elements = block.get("elements") or []
        problems = [] if 0 < len(elements) <= 25 else [f"must have 1-25 elements [json-pointer:{where}/elements]"]
        for i, item in enumerate(elements):
            problems += _element(item, f"{where}/elements/{i}", action_ids)
        return problems
    if kind == "input":
        problems = _text(block.get("label"), f"{where}/label", 2000, plain_only=True)
        element = block.get("element")
        if not isinstance(element, dict) or element.get("type") not in (
                "plain_text_input", "static_select", "users_select", "multi_users_select", "checkboxes",
                "radio_buttons", "datepicker", "number_input", "url_text_input", "rich_text_input"):
            return [*problems, f"unsupported element type [json-pointer:{where}/element/type]"]
        if not element.get("action_id"):
            problems.append(f"must provide action_id [json-pointer:{where}/element/action_id]")
        if element["type"] == "plain_text_input" and not 0 < element.get("max_length", 3000) <= 3000:
            problems.append(f"must be at most 3000 [json-pointer:{where}/element/max_length]")
        if element["type"] in ("static_select", "checkboxes", "radio_buttons"):
            problems += _options(element, f"{where}/element")
        return problems
    if kind == "markdown":
        text = block.get("text", "")
        return [] if 0 < len(text) <= 12000 else [f"must be 1-12000 characters [json-pointer:{where}/text]"]
    return []


def _options(element: dict[str, Any], where: str) -> list[str]:
    """A select's or checkbox group's options: 1-100 (checkboxes and radio buttons 1-10), each with
    text (at most 75; a select's plain_text), a value (at most 150) and an optional description
    (at most 75); initial options must be among them."""
    options = element.get("options")
    most = 100 if element["type"] == "static_select" else 10
    if not isinstance(options, list) or not 0 < len(options) <= most:
        return [f"must have 1-{most} options [json-pointer:{where}/options]"]
    problems: list[str] = []
    for i, option in enumerate(options):
        at = f"{where}/options/{i}"
        problems += _text(option.get("text"), f"{at}/text", 75, plain_only=element["type"] == "static_select")
        if not isinstance(option.get("value"), str) or not 0 < len(option["value"]) <= 150:
            problems.append(f"must be 1-150 characters [json-pointer:{at}/value]")
        if "description" in option:
            problems += _text(option["description"], f"{at}/description", 75)
    initial = ([element["initial_option"]] if "initial_option" in element else []) + \
        list(element.get("initial_options") or [])
    for option in initial:
        if option not in options:
            problems.append(f"must match one of the options [json-pointer:{where}/initial_option]")
    return problems


def _element(element: Any, where: str, action_ids: set[str]) -> list[str]:
    if not isinstance(element, dict):
        return [f"must be an object [json-pointer:{where}]"]
    if element.get("type") == "overflow":
        return _overflow(element, where, action_ids)
    if element.get("type") != "button":
        return []
    problems = _text(element.get("text"), f"{where}/text", 75, plain_only=True)
    action_id = element.get("action_id", "")
    if len(action_id) > 255:
        problems.append(f"must be less than 256 characters [json-pointer:{where}/action_id]")
    if action_id and action_id in action_ids:
        problems.append(f"duplicate action_id [json-pointer:{where}/action_id]")
    action_ids.add(action_id)
    if len(element.get("value", "")) > 2000:
        problems.append(f"must be less than 2001 characters [json-pointer:{where}/value]")
    if len(element.get("url", "")) > 3000:
        problems.append(f"must be less than 3001 characters [json-pointer:{where}/url]")
    if element.get("style") not in (None, "primary", "danger"):
        problems.append(f"must be primary or danger [json-pointer:{where}/style]")
    confirm = element.get("confirm")
    if confirm is not None:
        problems += _text(confirm.get("title"), f"{where}/confirm/title", 100, plain_only=True)
        problems += _text(confirm.get("text"), f"{where}/confirm/text", 300)
        problems += _text(confirm.get("confirm"), f"{where}/confirm/confirm", 30, plain_only=True)
        problems += _text(confirm.get("deny"), f"{where}/confirm/deny", 30, plain_only=True)
    return problems


def validate_view(view: Any, surface: str = "modal") -> list[str]:
    """A view as views.open / views.update check a modal (platform.md §1.6): title, submit and
    close plain_text of at most 24 characters, at most 100 blocks, an input needs a submit button;
    or as views.publish checks a Home tab (`surface="home"`): its blocks, at most 100."""
    if not isinstance(view, dict) or view.get("type") != surface:
        return [f"must be a {surface} [json-pointer:/view/type]"]
    problems: list[str] = []
    if surface == "modal":
        problems += _text(view.get("title"), "/view/title", 24, plain_only=True)
        for key in ("submit", "close"):
            if key in view:
                problems += _text(view[key], f"/view/{key}", 24, plain_only=True)
    blocks = view.get("blocks")
    problems += [p.replace("[json-pointer:/blocks", "[json-pointer:/view/blocks")
                 for p in validate_blocks(blocks, VIEW_BLOCKS)]
    if surface == "modal" and isinstance(blocks, list) \
            and any(isinstance(b, dict) and b.get("type") == "input" for b in blocks) and "submit" not in view:
        problems.append("must provide submit when the view has input blocks [json-pointer:/view/submit]")
    if len(str(view.get("callback_id", ""))) > 255:
        problems.append("must be less than 256 characters [json-pointer:/view/callback_id]")
    if len(str(view.get("private_metadata", ""))) > 3000:
        problems.append("must be less than 3001 characters [json-pointer:/view/private_metadata]")
    return problems


def _overflow(element: dict[str, Any], where: str, action_ids: set[str]) -> list[str]:
    """An overflow menu: 1-5 options, each a plain_text of at most 75 and a value of at most 150."""
    problems: list[str] = []
    action_id = element.get("action_id", "")
    if not action_id or len(action_id) > 255:
        problems.append(f"must be 1-255 characters [json-pointer:{where}/action_id]")
    if action_id in action_ids:
        problems.append(f"duplicate action_id [json-pointer:{where}/action_id]")
    action_ids.add(action_id)
    options = element.get("options")
    if not isinstance(options, list) or not 1 <= len(options) <= 5:
        return [*problems, f"must have 1-5 options [json-pointer:{where}/options]"]
    for i, option in enumerate(options):
        at = f"{where}/options/{i}"
        problems += _text(option.get("text") if isinstance(option, dict) else None, f"{at}/text", 75,
                          plain_only=True)
        value = option.get("value", "") if isinstance(option, dict) else ""
        if not isinstance(value, str) or not 0 < len(value) <= 150:
            problems.append(f"must be 1-150 characters [json-pointer:{at}/value]")
    return problems
