"""DeviceKey: generation, signing, 0600 key files, passphrase sealing."""

from __future__ import annotations

import base64
import json
import stat
import unicodedata
from pathlib import Path

import nacl.signing
import pytest

from client_sdk import DeviceKey, KeyFileError, PassphraseRequiredError, WrongPassphraseError
from client_sdk.diary import DIARY_KEY_KIND
from client_sdk.keys import read_secret_file, write_secret_file


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_saved_key_loads_back_with_the_same_identity(tmp_path: Path) -> None:
    key = DeviceKey.generate()
    key.save(tmp_path / "device.key")

    loaded = DeviceKey.load(tmp_path / "device.key")

    assert loaded == key
    assert loaded.device_key == key.device_key
    assert loaded.sign(b"statement") == key.sign(b"statement")


def test_signatures_verify_with_the_published_device_key() -> None:
    key = DeviceKey.generate()
    raw = base64.urlsafe_b64decode(key.device_key + "=" * (-len(key.device_key) % 4))

    signature = key.sign(b"consent statement")

    assert len(signature) == 64
    nacl.signing.VerifyKey(raw).verify(b"consent statement", signature)


def test_device_key_is_unpadded_base64url_of_the_public_key() -> None:
    key = DeviceKey.from_seed(bytes(range(32)))

    assert "=" not in key.device_key
    assert set(key.device_key) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    )
    assert base64.urlsafe_b64decode(key.device_key + "=") == key.verify_key_bytes
    assert len(key.verify_key_bytes) == 32


def test_two_generated_keys_differ() -> None:
    assert DeviceKey.generate().device_key != DeviceKey.generate().device_key


@pytest.mark.parametrize("passphrase", [None, "correct horse battery staple"])
def test_key_file_is_created_with_mode_0600(tmp_path: Path, passphrase: str | None) -> None:
    path = tmp_path / "device.key"

    DeviceKey.generate().save(path, passphrase=passphrase)

    assert _mode(path) == 0o600


def test_overwriting_a_key_keeps_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    DeviceKey.generate().save(path)
    replacement = DeviceKey.generate()

    replacement.save(path, overwrite=True)

    assert _mode(path) == 0o600
    assert DeviceKey.load(path) == replacement


def test_saving_over_an_existing_key_is_refused_without_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    original = DeviceKey.generate()
    original.save(path)

    with pytest.raises(KeyFileError, match="already exists"):
        DeviceKey.generate().save(path)

    assert DeviceKey.load(path) == original


def test_sealed_key_loads_with_the_right_passphrase(tmp_path: Path) -> None:
    key = DeviceKey.generate()
    key.save(tmp_path / "device.key", passphrase="s3cret passphrase")

    loaded = DeviceKey.load(tmp_path / "device.key", passphrase="s3cret passphrase")

    assert loaded == key


def test_sealed_key_file_does_not_contain_the_seed(tmp_path: Path) -> None:
    seed = bytes(range(32))
    DeviceKey.from_seed(seed).save(tmp_path / "device.key", passphrase="pw")
    raw = (tmp_path / "device.key").read_bytes()
    doc = json.loads(raw)

    assert doc["sealed"] is True and doc["kdf"] == "argon2id"
    assert seed not in raw
    assert base64.urlsafe_b64encode(seed).rstrip(b"=") not in raw
    assert "secret" not in doc


def test_wrong_passphrase_raises_and_leaves_the_file_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    DeviceKey.generate().save(path, passphrase="right")
    before = path.read_bytes()

    with pytest.raises(WrongPassphraseError):
        DeviceKey.load(path, passphrase="wrong")

    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["device.key"]


def test_sealed_key_without_a_passphrase_says_one_is_needed(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    DeviceKey.generate().save(path, passphrase="right")

    with pytest.raises(PassphraseRequiredError, match="sealed"):
        DeviceKey.load(path)


def test_passphrase_for_an_unsealed_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    DeviceKey.generate().save(path)

    with pytest.raises(KeyFileError, match="not sealed"):
        DeviceKey.load(path, passphrase="anything")


def test_altered_sealed_key_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    DeviceKey.generate().save(path, passphrase="right")
    doc = json.loads(path.read_bytes())
    blob = bytearray(base64.urlsafe_b64decode(doc["ciphertext"] + "=="))
    blob[-1] ^= 1
    doc["ciphertext"] = base64.urlsafe_b64encode(bytes(blob)).rstrip(b"=").decode()
    path.write_text(json.dumps(doc))

    with pytest.raises(WrongPassphraseError):
        DeviceKey.load(path, passphrase="right")


def test_passphrase_is_unicode_normalized(tmp_path: Path) -> None:
    composed = unicodedata.normalize("NFC", "café déjà vu")
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    key = DeviceKey.generate()
    key.save(tmp_path / "device.key", passphrase=composed)

    assert DeviceKey.load(tmp_path / "device.key", passphrase=decomposed) == key


def test_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="non-empty"):
        DeviceKey.generate().save(tmp_path / "device.key", passphrase="")

    assert not (tmp_path / "device.key").exists()


def test_missing_key_file_raises_key_file_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        DeviceKey.load(tmp_path / "absent.key")


def test_garbage_key_file_raises_key_file_error(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    path.write_bytes(b"\x00\xffnot json")

    with pytest.raises(KeyFileError, match="not a moodfed key file"):
        DeviceKey.load(path)


def test_a_diary_key_file_is_not_loaded_as_a_device_key(tmp_path: Path) -> None:
    path = tmp_path / "diary.key"
    write_secret_file(path, bytes(32), kind=DIARY_KEY_KIND)

    with pytest.raises(KeyFileError, match="diary-key"):
        DeviceKey.load(path)


def test_crafted_huge_kdf_limits_are_refused_before_deriving(tmp_path: Path) -> None:
    path = tmp_path / "device.key"
    DeviceKey.generate().save(path, passphrase="right")
    doc = json.loads(path.read_bytes())
    doc["memlimit"] = 1 << 40
    path.write_text(json.dumps(doc))

    with pytest.raises(KeyFileError, match="out-of-range"):
        DeviceKey.load(path, passphrase="right")


def test_secret_file_round_trips_arbitrary_bytes(tmp_path: Path) -> None:
    secret = bytes(range(256))
    write_secret_file(tmp_path / "s", secret, kind="test", passphrase="pw")

    assert read_secret_file(tmp_path / "s", kind="test", passphrase="pw") == secret
