"""The one reference resolver: names, ids and URIs -> (store, id), pure (no gRPC, no network)."""

from __future__ import annotations

import argparse

import pytest
from smf.common.errors import InvalidArgument, PermissionDenied
from smf.common.refs import (
    ANY,
    Confinement,
    add_confinement_arguments,
    artifact_id,
    check_data,
    is_uri,
    local_folder,
    resolve,
    resolve_key,
)
from smf.common.store import open_store


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("SMF_STORE", str(tmp_path / "configured"))
    return open_store(f"file://{tmp_path}/store")


@pytest.fixture
def s3(monkeypatch):
    """S3 stores are only constructed here, never contacted."""
    monkeypatch.setenv("SMF_S3_ENDPOINT", "127.0.0.1:9")
    monkeypatch.setenv("SMF_STORE", "/nonexistent/smf-configured")
    return open_store("s3://bucket/team-a")


def test_names_and_ids(store):
    assert resolve(store, "run1", "gan", field="model") == (store, "gan/run1")
    assert resolve(store, "gan/run1", "gan", field="model") == (store, "gan/run1")
    assert resolve(store, "gan/run1/", "gan", field="model") == (store, "gan/run1")
    assert resolve(store, "grids/g1", "datasets", field="data", any_kind=True) == (store, "grids/g1")
    assert resolve(store, "tones", "datasets", field="data", any_kind=True) == (store, "datasets/tones")
    assert artifact_id("x.y-z_1", "som", field="id") == "som/x.y-z_1"


@pytest.mark.parametrize(
    "raw", ["", "/", "gan/a/b", "../x", "gan/..", "a b", "gan/a b", "gan//x", ".smf-meta", "grids/x", "som/x"]
)
def test_bad_names_name_the_field(store, raw):
    with pytest.raises(InvalidArgument) as err:
        resolve(store, raw, "gan", field="model")
    assert err.value.field == "model", raw


def test_wrong_kind_says_which(store):
    with pytest.raises(InvalidArgument, match="names a som artifact"):
        resolve(store, store.key_uri("som/x1"), "grids", field="grid_id")
    with pytest.raises(InvalidArgument, match="names a som artifact"):
        resolve(store, "som/x1", "grids", field="grid_id")


def test_file_uris_inside_the_store(store):
    assert resolve(store, store.key_uri("gan/run1"), "gan", field="model") == (store, "gan/run1")
    assert resolve(store, store.key_uri("gan/run1") + "/", "gan", field="model") == (store, "gan/run1")
    assert resolve_key(store, store.key_uri("samples/x/3.pt"), field="latent") == (store, "samples/x/3.pt")
    with pytest.raises(InvalidArgument) as err:  # a key below the run is not the run's id
        resolve(store, store.key_uri("gan/run1/ckpt"), "gan", field="model")
    assert err.value.field == "model"


def test_file_uris_with_quoted_or_spaced_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("SMF_STORE", str(tmp_path / "configured"))
    spaced = open_store(str(tmp_path / "my store"))
    assert "%20" in spaced.uri
    raw = spaced.uri.replace("%20", " ") + "/gan/run1"
    assert resolve(spaced, raw, "gan", field="model") == (spaced, "gan/run1")
    assert resolve(spaced, spaced.key_uri("gan/run1"), "gan", field="model") == (spaced, "gan/run1")


@pytest.mark.parametrize(
    "tail", ["/../elsewhere/gan/run1", "/gan/../../elsewhere/gan/run1", "/./gan/run1", "//gan/run1", "/gan/%2e%2e"]
)
def test_traversal_is_refused_before_any_comparison(store, tail):
    with pytest.raises(InvalidArgument) as err:
        resolve(store, store.uri + tail, "gan", field="model", allowed=ANY)
    assert err.value.field == "model"


def test_outside_the_allowed_stores_is_permission_denied_without_looking(store, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    other = open_store(str(elsewhere))
    other.put_bytes("gan/exists/config.json", b"{}")
    msgs = []
    for name in ("exists", "absent"):
        with pytest.raises(PermissionDenied) as err:
            resolve(store, other.key_uri(f"gan/{name}"), "gan", field="model")
        msgs.append(err.value.message.replace(name, "NAME"))
    assert msgs[0] == msgs[1]  # the reply does not depend on whether the artifact exists there
    assert msgs[0].startswith("model: ") and store.uri in msgs[0]
    with pytest.raises(PermissionDenied):
        resolve_key(store, other.key_uri("gan/exists/config.json"), field="config_uri")
    with pytest.raises(PermissionDenied):
        resolve(store, "file:///elsewhere/grids/abc", "grids", field="grid_id")
    # a store next to ours whose name merely starts like ours is outside too
    with pytest.raises(PermissionDenied):
        resolve(store, store.uri + "-2/gan/run1", "gan", field="model")


def test_allowed_lists_more_stores(store, tmp_path):
    other = open_store(str(tmp_path / "other"))
    assert resolve(store, other.key_uri("gan/r"), "gan", field="m", allowed=[other]) == (other, "gan/r")
    found, aid = resolve(store, other.key_uri("gan/r"), "gan", field="m", allowed=[other.uri])
    assert (found.uri, aid) == (other.uri, "gan/r")


def test_any_opens_the_store_a_uri_names(store, tmp_path):
    other = open_store(str(tmp_path / "other"))
    found, aid = resolve(store, other.key_uri("gan/r"), "gan", field="--model", allowed=ANY)
    assert (found.uri, aid) == (other.uri, "gan/r")
    # a store that does not exist yet (a training run's --out) splits by the id's shape, no .smf-meta needed
    found, aid = resolve(None, f"file://{tmp_path}/fresh/rnn/run1", "rnn", field="--out", allowed=ANY)
    assert (found.uri, aid) == (open_store(str(tmp_path / "fresh")).uri, "rnn/run1")
    # an object key: the folder holding the store's .smf-meta
    other.put_bytes("samples/x/3.pt", b"z")
    found, key = resolve_key(store, other.key_uri("samples/x/3.pt"), field="latent", allowed=ANY)
    assert (found.uri, key) == (other.uri, "samples/x/3.pt")
    with pytest.raises(InvalidArgument) as err:
        resolve(store, "file:///run1", "gan", field="--model", allowed=ANY)
    assert err.value.field == "--model"


def test_s3_prefixes_end_where_the_store_says(s3):
    assert resolve(s3, "s3://bucket/team-a/gan/run1", "gan", field="model") == (s3, "gan/run1")
    assert resolve_key(s3, "s3://bucket/team-a/samples/x/3.pt", field="latent") == (s3, "samples/x/3.pt")
    # the bucket root, or a sibling prefix, is another store
    for raw in ("s3://bucket/gan/run1", "s3://bucket/team-b/gan/run1", "s3://bucket/team-ab/gan/run1"):
        with pytest.raises(PermissionDenied):
            resolve(s3, raw, "gan", field="model")
    # with ANY: an artifact id is the URI's last two segments, whatever the prefix
    for raw, root in (
        ("s3://bucket/gan/run1", "s3://bucket"),
        ("s3://bucket/team-b/gan/run1", "s3://bucket/team-b"),
        ("s3://bucket/a/b/c/gan/run1/", "s3://bucket/a/b/c"),
        ("s3://bucket/gan/gan/run1", "s3://bucket/gan"),
    ):
        found, aid = resolve(s3, raw, "gan", field="model", allowed=ANY)
        assert (found.uri, aid) == (root, "gan/run1"), raw
    found, aid = resolve(s3, "s3://bucket/team-a/gan/run1", "gan", field="model", allowed=ANY)
    assert found is s3 and aid == "gan/run1"  # a known store is reused, not opened again
    with pytest.raises(InvalidArgument):
        resolve(s3, "s3://bucket/run1", "gan", field="model", allowed=ANY)


def test_s3_keys_outside_known_stores_use_the_bucket_root(s3):
    found, key = resolve_key(s3, "s3://other/team-z/samples/x/3.pt", field="latent", allowed=ANY)
    assert (found.uri, key) == ("s3://other", "team-z/samples/x/3.pt")


def test_nested_known_stores_take_the_longest(s3, monkeypatch):
    root = open_store("s3://bucket")
    assert resolve(root, "s3://bucket/team-a/gan/r", "gan", field="m", allowed=[s3]) == (s3, "gan/r")


def test_other_schemes_and_non_strings(store):
    for raw in ("http://host/gan/run1", "gs://b/gan/x", "file://relative/gan/x"):
        with pytest.raises(InvalidArgument) as err:
            resolve(store, raw, "gan", field="model", allowed=ANY)
        assert err.value.field == "model"
    with pytest.raises(InvalidArgument):
        resolve_key(store, "", field="latent")
    with pytest.raises(InvalidArgument):
        resolve_key(store, "a/../b", field="latent")
    with pytest.raises(InvalidArgument):  # a key is relative: '/etc/x' is not quietly 'etc/x'
        resolve_key(store, "/etc/x", field="config_uri")
    assert is_uri("s3://b/k") and not is_uri("gan/run1") and not is_uri(None)


# --- confinement: the stores and data roots of a server ---------------------------------------------------------------
@pytest.fixture
def roots(tmp_path):
    """A data root with a folder of sounds in it, a private folder beside it, and a symlink from one to the other."""
    root, private = tmp_path / "root", tmp_path / "private"
    (root / "sounds").mkdir(parents=True)
    private.mkdir()
    (root / "escape").symlink_to(private)
    return root, private


def test_a_folder_under_a_data_root_is_returned_resolved(roots):
    root, _ = roots
    confine = Confinement.of([], [root])
    assert local_folder(str(root / "sounds"), confine.data_roots, field="f") == (root / "sounds").resolve()
    assert local_folder(f"{root}/sounds/../sounds", confine.data_roots, field="f") == (root / "sounds").resolve()
    assert local_folder(str(root / "not-yet"), confine.data_roots, field="f") == (root / "not-yet").resolve()


def test_folders_outside_the_roots_are_refused_alike(roots):
    root, private = roots
    confine = Confinement.of([], [root])
    msgs = []
    for raw in (str(private), str(private / "absent"), f"{root}/../private", str(root / "escape"), "../../etc"):
        with pytest.raises(PermissionDenied) as err:
            local_folder(raw, confine.data_roots, field="loaderConfig.data_path")
        assert err.value.message.startswith("loaderConfig.data_path: "), raw
        msgs.append(err.value.message.replace(raw, "<path>"))
    assert len(set(msgs)) == 1  # nothing in the reply depends on what is there
    with pytest.raises(PermissionDenied, match="none: this server trains on store data only"):
        local_folder(str(root / "sounds"), (), field="data")  # no root configured: no folder at all
    with pytest.raises(PermissionDenied):  # a sibling whose name extends the root's is outside it
        local_folder(f"{root}-2/sounds", confine.data_roots, field="data")


def test_check_data_by_kind_of_name(store, tmp_path, roots):
    root, private = roots
    other = open_store(str(tmp_path / "other"))
    confine = Confinement.of([other.uri], [root])
    assert check_data(store, "datasets/tones", field="data", confine=confine) == "datasets/tones"
    assert check_data(store, store.key_uri("datasets/tones"), field="data", confine=confine)
    assert check_data(store, other.key_uri("datasets/tones"), field="data", confine=confine)
    assert check_data(store, str(root / "sounds"), field="data", confine=confine) == str((root / "sounds").resolve())
    for raw in (str(private), "./private", "~/x", open_store(str(tmp_path / "third")).key_uri("datasets/t")):
        with pytest.raises(PermissionDenied):
            check_data(store, raw, field="data", confine=confine)
    for raw in ("", None, 3):
        with pytest.raises(InvalidArgument):
            check_data(store, raw, field="data", confine=confine)  # type: ignore[arg-type]
    with pytest.raises(PermissionDenied):  # the default: this store only, no folder
        check_data(store, str(root / "sounds"), field="data", confine=Confinement())


def test_confinement_flags_and_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SMF_ALLOWED_STORES", f"file://{tmp_path}/a, s3://bucket/team-a")
    monkeypatch.setenv("SMF_DATA_ROOTS", f"{tmp_path}/r1:{tmp_path}/r2")
    parser = argparse.ArgumentParser()
    add_confinement_arguments(parser)
    confine = Confinement.from_args(parser.parse_args([]))
    assert confine.stores == (open_store(str(tmp_path / "a")).uri, "s3://bucket/team-a")
    assert confine.data_roots == ((tmp_path / "r1").resolve(), (tmp_path / "r2").resolve())
    confine = Confinement.from_args(parser.parse_args(["--data-root", str(tmp_path / "r3")]))
    assert confine.data_roots == ((tmp_path / "r3").resolve(),)  # a flag replaces its variable
    assert len(confine.stores) == 2
    monkeypatch.delenv("SMF_ALLOWED_STORES")
    monkeypatch.delenv("SMF_DATA_ROOTS")
    parser = argparse.ArgumentParser()
    add_confinement_arguments(parser)
    assert Confinement.from_args(parser.parse_args([])) == Confinement()
    with pytest.raises(InvalidArgument, match="--data-root"):
        Confinement.of([], ["relative/root"])
