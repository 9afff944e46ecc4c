# SparseSwin-T on CIFAR-100 at 224x224 (paper: 85.35 % top-1; 84.80 % with
# L2 at lambda 1e-4, so the regulariser is off). The CIFAR-10 recipe
# (sparseswin-t_1xb128_cifar10.py) with 100 classes.
# Data: data/cifar100/cifar-100-python, downloaded by mmpretrain's CIFAR100
# when missing.
_base_ = ['./sparseswin-t_1xb128_cifar10.py']

model = dict(head=dict(num_classes=100))
data_preprocessor = dict(num_classes=100)

dataset_type = 'CIFAR100'
data_root = 'data/cifar100/'
train_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
val_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator
