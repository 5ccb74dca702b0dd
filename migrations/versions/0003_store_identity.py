"""store identity: the id that ties a database to its blob store

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 06:00:00

The table starts empty: the id is claimed when the store is first opened (see
vopstore/store/identity.py), so that an upgraded old database and a brand-new
one are told apart from a database restored or recreated beside existing blobs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('store_identity',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('store_id', sa.String(length=36), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_store_identity'))
    )


def downgrade() -> None:
    op.drop_table('store_identity')
