# The deploy form of i-dynamic-dwnet-tiny_8xb128_in1k.py (BatchNorms folded,
# see DWNet.switch_to_deploy) for testing and inference. It takes that config's
# training checkpoints (folded on loading) or the output of
# tools/model_converters/reparameterize.py.
_base_ = ['../i-dynamic-dwnet-tiny_8xb128_in1k.py']

model = dict(backbone=dict(deploy=True))
