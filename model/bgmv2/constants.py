"""Names of the model's deployment knobs (torch-free, so configs validate without importing torch)."""

BACKBONES = ("mobilenetv2", "resnet50", "resnet101")
REFINE_MODES = ("sampling", "thresholding", "full")
CROP_METHODS = ("unfold", "roi_align", "gather")
REPLACE_METHODS = ("scatter_nd", "scatter_element")
KERNEL_SIZES = (1, 3)
PATCH_SELECTS = ("nonzero", "static")
#: TensorRT's largest TopK K (ITopKLayer: K <= 3840); the static selector chains TopK steps of at most this.
TENSORRT_TOPK_MAX = 3840
