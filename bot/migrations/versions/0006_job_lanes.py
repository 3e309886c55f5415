"""job lanes: Job.incident_id means the incident, Job.lane the order it runs in

Revision ID: 0006
Revises: 0005

Before: a job's `incident_id` was the incident (its Slack lane), the negated id (its PagerDuty
lane), or empty with the id in `payload["incident"]` (jobs in no lane). After: `incident_id`
is always the incident, and `lane` ("slack:12", "pagerduty:12", or NULL) orders the jobs.
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

UNLANED = ('slack.announce', 'runbook.run_step', 'runbook.reply', 'pagerduty.invite_oncall')


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lane', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_job_lane', ['lane', 'status'], unique=False)
    bind = op.get_bind()
    job = sa.table('job', sa.column('id', sa.Integer), sa.column('kind', sa.String),
                   sa.column('incident_id', sa.Integer), sa.column('lane', sa.String),
                   sa.column('payload', sa.JSON))
    bind.execute(job.update().where(job.c.incident_id < 0).values(
        lane=sa.literal('pagerduty:') + sa.cast(-job.c.incident_id, sa.String), incident_id=-job.c.incident_id))
    bind.execute(job.update().where(job.c.incident_id > 0, job.c.lane.is_(None), job.c.kind.not_in(UNLANED))
                 .values(lane=sa.literal('slack:') + sa.cast(job.c.incident_id, sa.String)))
    # Jobs in no lane named their incident in the payload (a JSON column: read it in Python).
    for row in bind.execute(sa.select(job.c.id, job.c.payload).where(job.c.incident_id.is_(None))).all():
        incident = (row.payload or {}).get('incident')
        if isinstance(incident, int):
            bind.execute(job.update().where(job.c.id == row.id).values(incident_id=incident))


def downgrade() -> None:
    bind = op.get_bind()
    job = sa.table('job', sa.column('incident_id', sa.Integer), sa.column('lane', sa.String))
    bind.execute(job.update().where(job.c.lane.like('pagerduty:%')).values(incident_id=-job.c.incident_id))
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_index('ix_job_lane')
        batch_op.drop_column('lane')
