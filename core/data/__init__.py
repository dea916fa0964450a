"""From an image folder to batches: scan and validate, stratified split, decode cache, preprocessing, loaders, the iNaturalist download and the demo-set generator."""
