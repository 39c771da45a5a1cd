"""The demo: synthetic ImageNet/COCO/ADE20K-format data and result reports
for ``tools/demo.py`` (``make demo``)."""
from .synthetic import (GENERATOR_VERSION, SEG_CLASSES, SHAPES, DemoDataSpec,
                        generate_demo_data, read_manifest, shape_polygon)

__all__ = [
    'GENERATOR_VERSION', 'SEG_CLASSES', 'SHAPES', 'DemoDataSpec',
    'generate_demo_data', 'read_manifest', 'shape_polygon'
]
