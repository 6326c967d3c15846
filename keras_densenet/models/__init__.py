"""The model builders: `DenseNet121` ... `DenseNet264`, `DenseNetBC`, the
generic `DenseNet` and `build` (`densenet`), the FC-DenseNet segmentation
nets `FCDenseNet56`, `FCDenseNet67`, `FCDenseNet103`, the generic
`FCDenseNet` and `segmentation_head` for DenseNet backbones (`fcdensenet`),
ImageNet preprocessing (`imagenet`) and loading ``.keras`` files in safe
mode (`saved`).
"""
