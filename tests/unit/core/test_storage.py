"""Storage outside Airflow: plain paths and file:// URLs; object storage needs Airflow's connections."""

from __future__ import annotations

from pathlib import Path

import pytest

from invoiceflow.core.errors import InfrastructureError
from invoiceflow.core.storage import LOCAL_FILES


def test_local_files_open_paths_and_file_urls(tmp_path):
    assert LOCAL_FILES.open(str(tmp_path)) == tmp_path
    assert LOCAL_FILES.open((tmp_path / "a b").as_uri()) == Path(tmp_path / "a b")


def test_object_storage_without_airflow_is_a_clear_error():
    with pytest.raises(InfrastructureError, match=r"s3://bucket/portal: object storage \(s3://\)"):
        LOCAL_FILES.open("s3://bucket/portal")
