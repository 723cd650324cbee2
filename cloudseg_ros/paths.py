"""Files the package ships (models/, config/, data/): in the source checkout or installed share."""
import os

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def package_file(*parts: str) -> str:
    """Path of a shipped file: the checkout's copy if it exists, else the installed share's.

    Returns the checkout path when neither exists, so error messages name a real location.
    """
    source = os.path.join(SOURCE_ROOT, *parts)
    if os.path.exists(source):
        return source
    try:
        from ament_index_python.packages import get_package_share_directory
        installed = os.path.join(get_package_share_directory('cloudseg_ros'), *parts)
    except (ImportError, LookupError, ValueError, OSError):
        return source
    return installed if os.path.exists(installed) else source
