"""Torch-free constants of RobustVideoMatting (spec: rvm-model.md §1.1, §1.4)."""

#: ``variant`` values of :class:`model.rvm.MattingNetwork`.
VARIANTS = ("mobilenetv3", "resnet50")
#: ``refiner`` values; the released checkpoints are ``deep_guided_filter`` models.
REFINERS = ("deep_guided_filter", "fast_guided_filter")
#: Channels of the recurrent states r1..r4 per variant.
STATE_CHANNELS = {"mobilenetv3": (16, 20, 40, 64), "resnet50": (16, 32, 64, 128)}
#: Output stride of both encoders: ``src_sm`` must be at least this many pixels on each side.
NETWORK_STRIDE = 16
#: Parameter counts and state_dict entry counts per (variant, refiner), measured on master (§1.1).
PARAMETER_COUNTS = {
    ("mobilenetv3", "deep_guided_filter"): 3_748_633,
    ("mobilenetv3", "fast_guided_filter"): 3_747_825,
    ("resnet50", "deep_guided_filter"): 26_890_461,
    ("resnet50", "fast_guided_filter"): 26_889_653,
}
STATE_DICT_ENTRIES = {
    ("mobilenetv3", "deep_guided_filter"): 380,
    ("mobilenetv3", "fast_guided_filter"): 365,
    ("resnet50", "deep_guided_filter"): 390,
    ("resnet50", "fast_guided_filter"): 375,
}

__all__ = ["NETWORK_STRIDE", "PARAMETER_COUNTS", "REFINERS", "STATE_CHANNELS", "STATE_DICT_ENTRIES", "VARIANTS"]
