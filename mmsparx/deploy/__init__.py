"""Deployment: ONNX export of classifiers, RT-DETR and segmentors, and the
checks that hold ONNX Runtime's outputs against PyTorch's."""
from mmsparx.deploy.compare import (compare_argmax, compare_detections,
                                    compare_dense, sample_images)
from mmsparx.deploy.export import (DeployError, export_config, prepare,
                                   restored_default_scope)
from mmsparx.deploy.onnx_export import (export_onnx, read_metadata,
                                        run_onnxruntime)
from mmsparx.deploy.wrappers import (ClassifierExport, RTDETRExport,
                                     SegmentorExport, export_module,
                                     switch_to_deploy)

__all__ = ['export_config', 'export_onnx', 'export_module', 'run_onnxruntime',
           'read_metadata', 'compare_dense', 'compare_argmax',
           'compare_detections', 'sample_images', 'DeployError',
           'ClassifierExport', 'RTDETRExport', 'SegmentorExport',
           'switch_to_deploy', 'prepare', 'restored_default_scope']
