"""The chip's two applications, on the float reference and the functional chip model:
image compression (:mod:`anmf.apps.compress`) and rating prediction
(:mod:`anmf.apps.recommend`). The CLI (`anmf compress`, `anmf recommend`) wraps them."""
