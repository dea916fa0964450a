"""From an image folder to batches: scan and validate, stratified split, decode cache, preprocessing, loaders,
the iNaturalist download and the demo-set generator.
"""

from core.data.augment_policies import AUGMENT_POLICIES, register_augment_policy
from core.data.batched_augment import BatchAugment, BatchTransform, pack_params, sample_params
from core.data.batching import AUGMENT_DEVICES, PIPELINES, choose_num_workers
from core.data.checks import check_dataset, format_report
from core.data.decode_cache import cache_root, cache_stats, decode_images, reset_cache_stats
from core.data.demo import DEMO_CLASSES, ensure_demo_dataset
from core.data.device_batches import DeviceBatches
from core.data.download import (
    INATURALIST_URL,
    URL_ENV,
    DownloadError,
    dataset_url,
    default_download_dir,
    download_inaturalist,
    fetch,
    find_dataset_root,
    resolve_dataset,
    safe_extract,
)
from core.data.imagefolder import IMAGE_EXTENSIONS, cap_per_class, scan_dataset, stratified_split
from core.data.loaders import NORMALIZATIONS, CachedImageDataset, DataConfig, make_loaders, per_sample_augmentation
from core.data.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageDecodeError,
    Preprocessing,
    load_image_tensor,
    load_uint8,
    normalize,
)

__all__ = ["AUGMENT_POLICIES", "register_augment_policy", "cache_root", "AUGMENT_DEVICES", "BatchAugment",
           "BatchTransform",
           "DeviceBatches", "NORMALIZATIONS",
           "PIPELINES", "pack_params", "sample_params", "CachedImageDataset", "DEMO_CLASSES",
           "DataConfig", "DownloadError", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGE_EXTENSIONS", "INATURALIST_URL",
           "ImageDecodeError", "Preprocessing", "URL_ENV", "per_sample_augmentation", "cache_stats", "cap_per_class",
           "check_dataset", "choose_num_workers", "dataset_url", "decode_images", "default_download_dir",
           "download_inaturalist", "ensure_demo_dataset", "fetch", "find_dataset_root", "format_report",
           "load_image_tensor", "load_uint8", "make_loaders", "normalize", "reset_cache_stats", "resolve_dataset",
           "safe_extract", "scan_dataset", "stratified_split"]
