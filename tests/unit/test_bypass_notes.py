"""The AstDB notes of bypassed calls are removed only once their records are committed
(ari_app/calls/reconcile.py): with the database failing, they stay for the next reconcile."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from ari_app.calls import reconcile
from ari_app.calls.app import BridgeApp
from ari_app.config import load_config
from ari_app.store import InteractionStore
from tests.fake_ari import FakeAri

IID = "0123456789abcdef0123456789abcdef"


def notes(started: float) -> dict[str, str]:
    return {
        f"DB_KEYS({reconcile.BYPASS_FAMILY})": IID,
        f"DB_KEYS({reconcile.BYPASS_FAMILY}/{IID})": f"{started}_+4930123_5551000_PJSIP-c-1",
    }


def forgotten(ari: FakeAri) -> bool:
    return any(
        call["context"] == reconcile.FORGET_CONTEXT for call in ari.called("continue_in_dialplan")
    )


async def test_bypass_notes_stay_while_the_records_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = InteractionStore(tmp_path / "records.sqlite3", node="n1")
    try:
        config = load_config(
            env={"BOTBRIDGE_ARI_PASSWORD": "x", "BOTBRIDGE_STATE_DIR": str(tmp_path)}
        )
        ari = FakeAri(variables=notes(time.time() - 60))
        app = BridgeApp(config, ari, store)
        real = store.write_batch

        def down(creates: Mapping[str, Any], updates: Mapping[str, Any], **_: Any) -> None:
            raise OperationalError("INSERT", {}, Exception("connection refused"))

        monkeypatch.setattr(store, "write_batch", down)
        assert await reconcile.record_bypassed(app) == 1
        assert not forgotten(ari) and store.get(IID) is None  # the notes are kept

        monkeypatch.setattr(store, "write_batch", real)  # the database is back: next reconcile
        assert await reconcile.record_bypassed(app) == 1
        assert forgotten(ari)
        row = store.get(IID)
        assert (
            row is not None and row["outcome"] == "bypassed" and row["caller_number"] == "+4930123"
        )
    finally:
        store.close()
