"""On a machine where no Postgres or Redis answers, the run and test commands start private ones."""

from services.devtools import stores as store_finder
from services.devtools.stores import find_stores, free_port, postgres_answers, redis_answers


def test_private_postgres_and_redis_are_started_when_none_answers(monkeypatch, tmp_path):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setattr(store_finder, "DEFAULT_POSTGRES_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    monkeypatch.setattr(store_finder, "DEFAULT_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")

    found = find_stores(tmp_path / "run")
    try:
        assert [note.split(",")[0] for note in found.notes] == [
            "Postgres: none answered on 5432", "Redis: none answered on 6379"]
        assert postgres_answers(found.database_url) and found.database_url.endswith("/parley")
        assert redis_answers(found.redis_url)
    finally:
        found.stop()
    assert not postgres_answers(found.database_url) and not redis_answers(found.redis_url)
