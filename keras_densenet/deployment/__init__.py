"""Running trained models outside training: export to serving runtimes with
its checks (`export`), the runtimes themselves behind one interface
(`runtimes`), ``predict`` over image files (`predict`) and segmentation
masks (`masks`).
"""
