"""The boto3 S3 client, made from the standard AWS configuration; a setting boto3 cannot use is one ConfigError naming it.

boto3 reads `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_S3`), `AWS_PROFILE`, `AWS_DEFAULT_REGION` and `~/.aws/config`
when the client is made, and refuses a malformed one there with a ValueError or a botocore error: those are turned
into a ConfigError that says which setting, what it holds, and the form expected.
"""

from __future__ import annotations

import os
from typing import Any

from sdl.loader.errors import ConfigError, StorageError


def make_s3_client(attempt_s: float) -> Any:
    """A boto3 S3 client whose every attempt is bounded by `attempt_s` (connect and read) and that never retries itself."""
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import (
            BotoCoreError,
            InvalidRegionError,
            ProfileNotFound,
        )
    except ImportError:
        raise StorageError("s3:// paths need boto3, which is not installed; pip install 'streaming-dataloader[s3]'") from None

    config = Config(connect_timeout=attempt_s, read_timeout=attempt_s, retries={"total_max_attempts": 1},
                    max_pool_connections=32)
    try:
        return boto3.session.Session().client("s3", config=config)
    except ProfileNotFound:
        raise ConfigError(f"AWS_PROFILE={os.environ.get('AWS_PROFILE', '')!r}: no such profile; expected a profile defined in "
                          "~/.aws/config or ~/.aws/credentials; define it, or correct or unset AWS_PROFILE") from None
    except InvalidRegionError:
        raise ConfigError(f"AWS_DEFAULT_REGION={os.environ.get('AWS_DEFAULT_REGION', '')!r}: not a region name; expected "
                          "one such as us-east-1; correct or unset it (or the region of the profile)") from None
    except BotoCoreError as exc:  # partial credentials, a malformed ~/.aws/config, …
        raise ConfigError(f"the AWS configuration is unusable ({exc}); expected complete settings in the AWS_* variables "
                          "or ~/.aws/config; correct them") from None
    except ValueError as exc:  # "Invalid endpoint: localhost:9000"
        raise ConfigError(f"{endpoint_setting()}: not an endpoint URL (boto3: {exc}); expected the form http(s)://host:port, "
                          "such as http://minio.local:9000; correct it, or unset it for AWS S3") from None


def endpoint_setting() -> str:
    """The setting that names the endpoint, as `NAME='value'`: the S3-specific variable first, as boto3 reads them."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(name):
            return f"{name}={os.environ[name]!r}"
    return "the endpoint_url of the AWS configuration (~/.aws/config)"
