# The compiled engine (python/_core.cpp). Private: use the fastmlp package.
from typing import Any

def __getattr__(name: str) -> Any: ...
