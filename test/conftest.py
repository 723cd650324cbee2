"""Fixtures shared by every test folder."""
import pytest


@pytest.fixture(scope='session')
def tiny_models(tmp_path_factory):
    """Random-init ICNet and aware CARN-M x2/x4 at test widths, under the shipped file names."""
    pytest.importorskip('torch')
    from cloudseg_ros.inference.model_files import write_tiny_models
    return write_tiny_models(str(tmp_path_factory.mktemp('models')))
