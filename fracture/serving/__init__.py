"""An HTTP service and web page around a fracture checkpoint (`pip install fracture[serve]`)."""

from fracture.serving.app import NOTICE, ServeSettings, create_app, run_server

__all__ = ["NOTICE", "ServeSettings", "create_app", "run_server"]
