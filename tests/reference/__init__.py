"""An independent DWNet (``dwnet.py``) and the helpers that compare dwnet_mm
with it (``weights.py``, ``backbone.py``)."""
