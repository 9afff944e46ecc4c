# Kept for the short path users type: the config lives in
# configs/spartan/upernet_spartan-t_8xb2-160k_ade20k-512x512.py.
_base_ = ['./spartan/upernet_spartan-t_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['mmsparx'], allow_failed_imports=False)
