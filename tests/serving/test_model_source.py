"""Publishing the model where every replica reads it (a directory every node mounts here; S3 in test_launch)."""
import pytest

from components.serving.model_source import COMPLETE, publish_model, replica_model


def test_publish_once_under_the_content_hash_and_read_in_place_from_a_shared_mount(tmp_path):
    model = tmp_path / "sft"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    shared = tmp_path / "shared" / "serve-model"
    where = publish_model(model, str(shared))
    digest = where.rsplit("/", 1)[1]
    assert (shared / "LATEST").read_text() == digest and (shared / digest / COMPLETE).exists()
    assert publish_model(model, str(shared)) == where  # a complete copy is not written again
    assert replica_model(str(shared)) == where == replica_model(where)  # LATEST, or the copy named
    assert replica_model(str(model)) == str(model)  # an unpublished directory (one node) as given
    assert replica_model("Qwen/Qwen2.5-32B-Instruct") == "Qwen/Qwen2.5-32B-Instruct"
    (model / "model.safetensors").write_bytes(b"retrained")
    assert publish_model(model, str(shared)) != where  # new weights, a new copy; LATEST follows it
    (shared / "LATEST").write_text("0123456789abcdef")  # names a copy that never completed
    with pytest.raises(FileNotFoundError, match="no complete model"):
        replica_model(str(shared))
