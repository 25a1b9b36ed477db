"""The S3 backup target: a bucket and a prefix, through boto3 (AWS's own signing and retries).

Works with AWS and S3-compatible servers (MinIO, Ceph RGW, moto): ``endpoint`` selects the
server and switches to path-style addressing, which every compatible server understands.

Credentials are never part of the target's description: ``credentials_env="AWS"`` reads
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` (and ``AWS_SESSION_TOKEN``) from the
environment when the target is opened, ``profile`` names a profile of the shared AWS
files, and neither means boto3's default chain (environment, files, instance role). The
node's catalog stores the variable prefix or the profile name, never a secret.

Requests: one PUT per object up to 64 MiB (every pack), multipart above; a ranged GET per
read; botocore's "standard" retries, bounded (``limits.s3_attempts_max``). Errors become one
sentence: a missing bucket, refused credentials, an unreachable endpoint and a full target
each have their own class; a missing object is ``ObjectMissing``.

What it must not do: log or raise with a secret in the text, or retry without bound.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import botocore.config
import botocore.exceptions as bx

from ..errors import InvalidArgument
from . import limits
from .errors import (
    ObjectMissing,
    TargetDenied,
    TargetFailed,
    TargetFull,
    TargetMissing,
    TargetUnreachable,
)
from .object_names import check_name, check_prefix

_DENIED = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken",
           "InvalidToken", "AuthorizationHeaderMalformed", "InvalidClientTokenId", "403",
           "AllAccessDisabled", "AccountProblem"}
_FULL = {"EntityTooLarge", "QuotaExceeded", "XMinioStorageFull", "InsufficientStorage",
         "StorageFull", "507"}
_BUSY = {"SlowDown", "ServiceUnavailable", "RequestTimeout", "InternalError", "503", "500",
         "RequestTimeTooSkewed"}
_UNREACHABLE = (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError,
                bx.ConnectionClosedError, bx.ProxyConnectionError, bx.HTTPClientError)
_STREAM_ERRORS = (bx.ReadTimeoutError, bx.ResponseStreamingError, bx.IncompleteReadError,
                  bx.ConnectionClosedError)


def _one_line(text: object, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


class S3Target:
    """A repository under ``s3://bucket/prefix`` (see the module docstring)."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint: str | None = None,
                 region: str | None = None, credentials_env: str | None = None,
                 profile: str | None = None, pool_connections: int = limits.pool_threads_max) -> None:
        if not bucket:
            raise InvalidArgument("an S3 backup target needs a bucket: s3://bucket/prefix")
        if prefix:
            check_prefix(prefix + "/")
        self.bucket, self.prefix = bucket, prefix
        self.endpoint, self.region = endpoint, region
        self.credentials_env, self.profile = credentials_env, profile
        self._where = self.url + (f" at {endpoint}" if endpoint else "")
        secrets: dict[str, str] = {}
        if credentials_env:
            secrets = self._env_credentials(credentials_env)
        try:
            session = boto3.session.Session(profile_name=profile) if profile else boto3.session.Session()
        except bx.ProfileNotFound:
            raise TargetDenied(target=self._where, reason=f"AWS profile {profile!r} is not configured") from None
        config = botocore.config.Config(
            retries={"max_attempts": limits.s3_attempts_max, "mode": "standard"},
            connect_timeout=limits.s3_connect_timeout_s, read_timeout=limits.s3_read_timeout_s,
            max_pool_connections=pool_connections,
            s3={"addressing_style": "path"} if endpoint else None,
            # Only checksums S3 asks for: S3-compatible servers differ in what they accept.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        try:
            self.client: Any = session.client("s3", endpoint_url=endpoint, region_name=region,
                                              config=config, **secrets)
        except ValueError as exc:                      # a malformed endpoint URL
            raise InvalidArgument(f"S3 endpoint {endpoint!r} is not valid: {_one_line(exc)}") from None

    def _env_credentials(self, prefix: str) -> dict[str, str]:
        names = {"aws_access_key_id": f"{prefix}_ACCESS_KEY_ID",
                 "aws_secret_access_key": f"{prefix}_SECRET_ACCESS_KEY"}
        missing = [v for v in names.values() if not os.environ.get(v)]
        if missing:
            raise TargetDenied(target=self._where, reason=f"environment variable {missing[0]} is not set")
        out = {k: os.environ[v] for k, v in names.items()}
        if os.environ.get(f"{prefix}_SESSION_TOKEN"):
            out["aws_session_token"] = os.environ[f"{prefix}_SESSION_TOKEN"]
        return out

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def describe(self) -> dict[str, str]:
        out = {"kind": "s3", "url": self.url}
        for key, value in (("endpoint", self.endpoint), ("region", self.region),
                           ("credentials_env", self.credentials_env), ("profile", self.profile)):
            if value:
                out[key] = value
        return out

    def _key(self, name: str) -> str:
        check_name(name)
        return f"{self.prefix}/{name}" if self.prefix else name

    def _error(self, exc: Exception, name: str) -> Exception:
        if isinstance(exc, bx.ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
            reason = _one_line(f"{code}: {err.get('Message') or status}")
            if code == "NoSuchBucket":
                return TargetMissing(target=self._where, reason=f"bucket {self.bucket} does not exist")
            if code in ("NoSuchKey", "404", "NotFound"):
                return ObjectMissing(name=name, target=self._where, context="")
            if code in _DENIED or status == "403":
                return TargetDenied(target=self._where, reason=reason)
            if code in _FULL or status == "507":
                return TargetFull(target=self._where, reason=reason)
            if code in _BUSY:
                return TargetUnreachable(target=self._where, reason=f"it kept answering {reason}")
            return TargetFailed(target=self._where, name=name, reason=reason)
        if isinstance(exc, _UNREACHABLE):
            return TargetUnreachable(target=self._where, reason=_one_line(exc))
        if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
            return TargetDenied(target=self._where, reason="no credentials were found (environment, profile or instance role)")
        return TargetFailed(target=self._where, name=name, reason=_one_line(exc))

    def put(self, name: str, data: bytes) -> None:
        key = self._key(name)
        try:
            if len(data) <= limits.s3_multipart_threshold_bytes:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
            else:
                self._put_multipart(key, data)
        except (bx.BotoCoreError, bx.ClientError) as exc:
            raise self._error(exc, name) from None

    def _put_multipart(self, key: str, data: bytes) -> None:
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        try:
            parts = []
            view = memoryview(data)
            for number, start in enumerate(range(0, len(data), limits.s3_part_bytes), start=1):
                body = bytes(view[start:start + limits.s3_part_bytes])
                etag = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload,
                                               PartNumber=number, Body=body)["ETag"]
                parts.append({"ETag": etag, "PartNumber": number})
            self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload,
                                                  MultipartUpload={"Parts": parts})
        except BaseException:
            # If the abort fails too, GC's sweep_incomplete aborts the upload later.
            with contextlib.suppress(bx.BotoCoreError, bx.ClientError):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload)
            raise

    def get(self, name: str, start: int = 0, length: int | None = None) -> bytes:
        key = self._key(name)
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if start < 0:
            args["Range"] = f"bytes={start}"
        elif length is not None:
            if length <= 0:
                return b""
            args["Range"] = f"bytes={start}-{start + length - 1}"
        elif start:
            args["Range"] = f"bytes={start}-"
        for attempt in range(limits.s3_attempts_max):
            try:
                body = self.client.get_object(**args)["Body"]
                try:
                    data: bytes = body.read()
                finally:
                    body.close()
                return data
            except bx.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                    return b""                          # the object is shorter than start
                raise self._error(exc, name) from None
            except _STREAM_ERRORS as exc:
                # botocore retries the request, not a body cut off half-way: do that here.
                if attempt + 1 == limits.s3_attempts_max:
                    raise self._error(exc, name) from None
                time.sleep(0.2 * 2**attempt)
            except bx.BotoCoreError as exc:
                raise self._error(exc, name) from None
        raise AssertionError("unreachable")

    def head(self, name: str) -> int | None:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(name))["ContentLength"])
        except bx.ClientError as exc:
            error = self._error(exc, name)
            if isinstance(error, ObjectMissing):
                return None
            raise error from None
        except bx.BotoCoreError as exc:
            raise self._error(exc, name) from None

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        check_prefix(prefix)
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        cut = len(self.prefix) + 1 if self.prefix else 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
            for page in pages:
                for item in page.get("Contents", ()):
                    yield item["Key"][cut:], int(item["Size"])
        except (bx.BotoCoreError, bx.ClientError) as exc:
            raise self._error(exc, prefix or "the listing") from None

    def delete(self, name: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(name))
        except (bx.BotoCoreError, bx.ClientError) as exc:
            error = self._error(exc, name)
            if not isinstance(error, ObjectMissing):
                raise error from None

    def sweep_incomplete(self, older_than_s: float = limits.incomplete_age_s) -> int:
        removed, now = 0, datetime.now(UTC)
        full = f"{self.prefix}/" if self.prefix else ""
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=full)
            for page in pages:
                for up in page.get("Uploads", ()):
                    if (now - up["Initiated"]).total_seconds() > older_than_s:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=up["Key"],
                                                           UploadId=up["UploadId"])
                        removed += 1
        except (bx.BotoCoreError, bx.ClientError) as exc:
            raise self._error(exc, "the multipart uploads") from None
        return removed
