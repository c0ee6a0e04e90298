"""The sentences every output says the same way: the terminal, JSON, HTML, assertion messages, the Keras callback.

Plain strings, no imports: any stage may use them.
"""

from __future__ import annotations

from typing import Final

__all__ = ["GRADIENT_ERROR_ADVICE", "NEVER_TRAINED"]

GRADIENT_ERROR_ADVICE: Final = (
    "a gradient reaches these ops and they have none; if a result is meant as a constant, wrap the "
    "result in tf.stop_gradient (not the input: a gradient still reaches the op)"
)
"""What to do about ``Report.gradient_errors``."""

NEVER_TRAINED: Final = "receives a gradient, but no gradient call asks for it: it never trains"
"""The finding of ``Report.never_trained``."""
