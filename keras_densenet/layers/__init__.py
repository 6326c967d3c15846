"""The building blocks of a DenseNet, made of stock Keras layers: dense layer,
dense block, transition, stem and head (`blocks`), their memory-efficient
twins (`efficient`), PyTorch's fused BatchNormalization (`fused`) and fast
weight initialisation (`initialization`).
"""
