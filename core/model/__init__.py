"""The Part A CNN and the Part B backbones as data and modules: the torch-free spec, the builder, exact counts, pretrained torchvision backbones by name."""
