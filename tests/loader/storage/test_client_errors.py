"""How the S3 client fails, on a real S3 server (moto) where one can: a missing bucket or denied access at once, naming
the bucket and what to do; a port where nothing listens after UNREACHABLE_ATTEMPTS quick attempts; timeouts and 5xx
retried for the whole storage timeout; `SDL_STORAGE_TIMEOUT_S` read and checked; a failed `sdl prepare … s3://` upload
names its staging folder, and a re-run resumes from it; a download that the local disk refuses is not retried; an AWS
setting that boto3 cannot use is one ConfigError naming it."""

from __future__ import annotations

import errno
import pickle
import socket
import sys
import time
from pathlib import Path

import boto3
import pytest
from sdl.loader.errors import ConfigError, StorageError
from sdl.loader.storage import RemoteFiles, S3Client
from sdl.loader.storage import client as client_module
from sdl.loader.storage.client import (
    DEFAULT_TIMEOUT_S,
    LocalWriteError,
    TIMEOUT_ENV,
    UNREACHABLE_ATTEMPTS,
    Missing,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "prepare"))
from corpus import make_texts, write_jsonl


@pytest.fixture(autouse=True)
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))  # staging and the node cache
    monkeypatch.delenv(TIMEOUT_ENV, raising=False)


class FakeClock:
    """Stands in for the `time` module of the client: sleeping advances the clock, so a 60 s budget takes no time."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def failing(exc: BaseException, calls: list[int]):
    def request():
        calls.append(1)
        raise exc
    return request


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_upload_to_a_missing_bucket_fails_at_once_naming_bucket_and_key(s3_server, tmp_path, monkeypatch):
    path = tmp_path / "shard.npy"
    path.write_bytes(b"x" * 100)
    client = S3Client(timeout_s=30.0)
    calls = []
    real = client.client.upload_file
    monkeypatch.setattr(client.client, "upload_file", lambda *a, **k: (calls.append(1), real(*a, **k)))
    with pytest.raises(StorageError, match=r"^s3://no-such-bucket/ds/shard.npy: the bucket 'no-such-bucket' does not "
                                           rf"exist at {s3_server}; create it \(aws s3 mb s3://no-such-bucket\)") as caught:
        client.upload_file(path, "no-such-bucket", "ds/shard.npy")
    assert len(calls) == 1 and not isinstance(caught.value, Missing)
    with pytest.raises(StorageError, match=r"^s3://no-such-bucket/k: the bucket 'no-such-bucket' does not exist"):
        client.get_bytes("no-such-bucket", "k")
    with pytest.raises(StorageError, match=r"^s3://no-such-bucket: the bucket 'no-such-bucket' does not exist"):
        client.require_bucket("no-such-bucket")


def test_a_missing_object_in_an_existing_bucket_is_still_missing(s3_bucket, s3_server):
    client = S3Client(timeout_s=30.0)
    client.require_bucket(s3_bucket)  # exists: no error
    with pytest.raises(Missing, match=rf"^s3://{s3_bucket}/nothing: no such object at {s3_server}; "):
        client.get_bytes(s3_bucket, "nothing")
    assert client.head(s3_bucket, "nothing") is None


def test_access_denied_fails_at_once_naming_the_bucket_and_the_credentials(monkeypatch):
    from botocore.exceptions import ClientError

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    denied = ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"},
                          "ResponseMetadata": {"HTTPStatusCode": 403}}, "PutObject")
    calls = []
    with pytest.raises(StorageError, match=r"^s3://b/k: the store at http://127.0.0.1:1 denied access \(ClientError "
                                           r"AccessDenied\); check the credentials .* may use bucket 'b'$"):
        S3Client(timeout_s=30.0).call("b", "k", failing(denied, calls))
    assert len(calls) == 1


def test_a_port_where_nothing_listens_fails_after_a_few_quick_attempts(s3_server, monkeypatch):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    client = S3Client(timeout_s=60.0)
    began = time.monotonic()
    with pytest.raises(StorageError, match=rf"^s3://b/p/manifest.json: no connection to the store at {endpoint} "
                                           rf"\({UNREACHABLE_ATTEMPTS} attempts in [\d.]+ s, last: EndpointConnectionError"):
        client.get_bytes("b", "p/manifest.json")
    assert time.monotonic() - began < 15  # not the 60 s timeout: a few quick attempts, then the error


def test_refused_is_retried_briefly_and_timeouts_for_the_whole_budget(monkeypatch):
    from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setattr(client_module, "time", FakeClock())
    client = S3Client(timeout_s=60.0)
    refused, timeouts = [], []
    with pytest.raises(StorageError, match=r"no connection to the store"):
        client.call("b", "k", failing(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), refused))
    assert len(refused) == UNREACHABLE_ATTEMPTS and client_module.time.now < 3.0
    with pytest.raises(StorageError, match=rf"did not answer for 60 s \(\d+ attempts, .*raise the storage timeout "
                                           rf"\({TIMEOUT_ENV}=<seconds> for sdl commands"):
        client.call("b", "k", failing(ConnectTimeoutError(endpoint_url="http://127.0.0.1:1"), timeouts))
    assert len(timeouts) > 2 * UNREACHABLE_ATTEMPTS and client_module.time.now > 55.0


def test_a_failed_5xx_answer_is_retried_for_the_whole_budget(monkeypatch):
    from botocore.exceptions import ClientError

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setattr(client_module, "time", FakeClock())
    busy = ClientError({"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "GetObject")
    calls = []
    with pytest.raises(StorageError, match=r"did not answer for 10 s"):
        S3Client(timeout_s=10.0).call("b", "k", failing(busy, calls))
    assert len(calls) > UNREACHABLE_ATTEMPTS


def test_the_storage_timeout_comes_from_the_argument_then_the_environment_then_the_default(s3_server, monkeypatch):
    assert S3Client().timeout_s == DEFAULT_TIMEOUT_S
    monkeypatch.setenv(TIMEOUT_ENV, " 120 ")
    assert S3Client().timeout_s == 120.0 and S3Client(5.0).timeout_s == 5.0
    assert RemoteFiles("s3://b/ds").client.timeout_s == 120.0
    monkeypatch.setenv(TIMEOUT_ENV, "0.5")
    assert pickle.loads(pickle.dumps(S3Client())).timeout_s == 0.5  # a worker keeps the parent's value
    monkeypatch.setenv(TIMEOUT_ENV, "")
    assert S3Client().timeout_s == DEFAULT_TIMEOUT_S


def test_datasets_built_without_a_timeout_take_the_environment(s3_dataset, monkeypatch):
    from sdl.loader import TokenWindows

    _, url = s3_dataset(num_tokens=2_000, tokens_per_shard=1_000)
    monkeypatch.setenv(TIMEOUT_ENV, "7")
    assert TokenWindows(url, seq_len=16).remote.client.timeout_s == 7.0
    assert TokenWindows(url, seq_len=16, storage_timeout_s=3).remote.client.timeout_s == 3.0


@pytest.mark.parametrize("value", ["x", True, 0, -1.5])
def test_a_bad_storage_timeout_argument_is_a_config_error(value):
    with pytest.raises(ConfigError, match=f"storage_timeout_s is {value!r}, expected a positive number of seconds"):
        S3Client(value)


@pytest.mark.parametrize("text", ["0", "-3", "abc", "inf", "nan", "60s"])
def test_a_bad_storage_timeout_in_the_environment_is_a_config_error(text, monkeypatch):
    monkeypatch.setenv(TIMEOUT_ENV, text)
    with pytest.raises(ConfigError, match=rf"^{TIMEOUT_ENV}='{text}': expected a positive number of seconds"):
        S3Client()


def test_prepare_to_a_missing_bucket_fails_before_tokenizing(s3_server, tmp_path, capsys):
    from sdl.cli.main import main
    from sdl.prepare.upload import staging_dir

    data = write_jsonl(tmp_path / "a.jsonl", make_texts(50, seed=1))
    url = "s3://bucket-never-made/ds"
    assert main(["prepare", str(data), url]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: s3://bucket-never-made: the bucket 'bucket-never-made' does not exist at ") and "aws s3 mb" in err
    assert not staging_dir(url).exists()


def test_a_failed_upload_names_its_staging_folder_and_a_rerun_resumes_from_it(own_s3_server, s3_server, tmp_path,
                                                                               monkeypatch, capsys):
    from sdl.cli.main import main
    from sdl.prepare import PrepareConfig, prepare
    from sdl.prepare.upload import prepare_to_store, staging_dir

    endpoint, stop = own_s3_server
    boto3.client("s3").create_bucket(Bucket="staged")
    data = write_jsonl(tmp_path / "a.jsonl", make_texts(200, seed=2))
    url, staging = "s3://staged/ds", staging_dir("s3://staged/ds")

    def run_local_then_lose_the_store(config):
        report = prepare(config)
        stop()  # the store goes down before the manifest is uploaded
        return report

    config = PrepareConfig(sources=(str(data),), out=url, tokens_per_shard=500)
    with pytest.raises(StorageError, match=rf"no connection to the store at {endpoint} .*; the prepared files stay in "
                                           rf"{staging}: run the same sdl prepare command again to resume the upload, "
                                           "or delete that folder to start over$"):
        prepare_to_store(config, run_local_then_lose_the_store)
    assert (staging / "manifest.json").is_file()
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)  # the same URL on a store that is up
    boto3.client("s3").create_bucket(Bucket="staged")
    assert main(["prepare", str(data), url, "--tokens-per-shard", "500"]) == 0
    prepare(PrepareConfig(sources=(str(data),), out=str(tmp_path / "local"), tokens_per_shard=500))
    stored = boto3.client("s3").get_object(Bucket="staged", Key="ds/manifest.json")["Body"].read()
    assert stored == (tmp_path / "local" / "manifest.json").read_bytes() and not staging.exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, a file whose every write fails with ENOSPC")
def test_a_download_that_the_local_disk_refuses_is_not_retried_as_the_network(s3_bucket, monkeypatch):
    boto3.client("s3").put_object(Bucket=s3_bucket, Key="k", Body=b"x" * 5_000)
    monkeypatch.setattr(client_module, "time", FakeClock())  # were it retried, it would be for the whole 60 s, at no cost
    client, gets = S3Client(timeout_s=60.0), []
    client.client.meta.events.register("before-call.s3.GetObject", lambda **_: gets.append(1))
    with open("/dev/full", "r+b", buffering=0) as full, pytest.raises(LocalWriteError) as caught:
        client.download(s3_bucket, "k", full)
    assert str(caught.value) == (f"s3://{s3_bucket}/k: cannot write it to /dev/full (ENOSPC: No space left on device); free "
                                 "space there, or write it elsewhere")
    assert gets == [1] and caught.value.os_error.errno == errno.ENOSPC


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("AWS_ENDPOINT_URL", "localhost:9000", "AWS_ENDPOINT_URL='localhost:9000': not an endpoint URL (boto3: Invalid endpoint: "
     "localhost:9000); expected the form http(s)://host:port, such as http://minio.local:9000; correct it, or unset it for AWS S3"),
    ("AWS_PROFILE", "no-such-profile", "AWS_PROFILE='no-such-profile': no such profile; expected a profile defined in "
     "~/.aws/config or ~/.aws/credentials; define it, or correct or unset AWS_PROFILE"),
])
def test_an_aws_setting_boto3_cannot_use_is_one_config_error_naming_it(name, value, expected, tmp_path, monkeypatch, capsys):
    from sdl.cli.main import main
    from sdl.loader import TokenWindows

    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))  # no profile anywhere but the defaults
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        TokenWindows("s3://bucket/corpus", seq_len=8, cache_dir=tmp_path / "cache")
    assert str(caught.value) == expected
    assert main(["inspect", "s3://bucket/corpus"]) == 1 and capsys.readouterr().err == f"error: {expected}\n"
