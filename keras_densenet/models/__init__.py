"""The model builders: `DenseNet121` ... `DenseNet264`, `DenseNetBC`, the
generic `DenseNet` and `build` (`densenet`, over `builder` which assembles
the graph, `options` which validates the build options once and `inputs`
for the input tensor and shape), multiscale features (`features`), the
FC-DenseNet segmentation nets `FCDenseNet56`, `FCDenseNet67`,
`FCDenseNet103` and the generic `FCDenseNet` (`fcdensenet`),
`segmentation_head` for DenseNet backbones (`segmentation`), ImageNet
preprocessing (`imagenet`) and loading ``.keras`` files in safe mode
(`saved`).
"""
