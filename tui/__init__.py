"""The terminal user interface of CLLM (Textual).

Textual reads TEXTUAL_FPS once, when it is first imported, so the default is set here,
before any Textual module loads: 20 frames per second is plenty for progress bars and
keeps the app light over SSH. A value the user set is left alone.
"""

import os

os.environ.setdefault("TEXTUAL_FPS", "20")
