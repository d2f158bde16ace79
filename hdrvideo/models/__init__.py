"""Neural network architectures for inverse tone mapping and joint SR-ITM.

Public API::

    create(name, **options) -> ITMModel            # irnet-2, irnet-1-48, irnet-5-x2, irnet-5-x4,
                                                   # gpgmnet-x2, gpgmnet-x4, agcm
    list_architectures() -> list[dict]             # name, scale, params, description, citation
    detect(state_dict) -> str                      # which architecture a state_dict belongs to
    load_weights(model, path) -> model             # .safetensors / .pth / .pt, strict
    save_weights(model, path, metadata=None)       # safetensors with arch/scale/colour_domain
    load_model(name_or_None, weights_path, **options) -> model (eval mode)
    sha256_file(path) -> str

Every model maps (N,3,H,W) BT.709 R'G'B' in [0,1] to (N,3,sH,sW) PQ BT.2020 R'G'B', clamped
to [0,1] in eval mode; see :mod:`hdrvideo.models.base` for the contract, the colour domains and
the global context used for tiled inference.
"""

__all__ = [
    "AGCM",
    "ArchSpec",
    "COLOUR_DOMAINS",
    "GPGMNet",
    "IRNet",
    "ITMModel",
    "UnknownArchitectureError",
    "WeightsError",
    "architecture_names",
    "create",
    "detect",
    "get_spec",
    "list_architectures",
    "load_model",
    "load_weights",
    "read_metadata",
    "read_state_dict",
    "register",
    "save_weights",
    "sha256_file",
    "unwrap_state_dict",
]

#: name → submodule; imported on first use, so that ``import hdrvideo.models.cli`` (the CLI's
#: command registration) does not load torch.
_WHERE = {
    "AGCM": "agcm", "COLOUR_DOMAINS": "base", "ITMModel": "base", "GPGMNet": "gpgmnet", "IRNet": "irnet",
    **{n: "registry" for n in ("ArchSpec", "UnknownArchitectureError", "architecture_names", "create", "detect",
                               "get_spec", "list_architectures", "register")},
    **{n: "weights" for n in ("WeightsError", "load_model", "load_weights", "read_metadata", "read_state_dict",
                              "save_weights", "sha256_file", "unwrap_state_dict")},
}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hdrvideo.models' has no attribute {name!r}")
