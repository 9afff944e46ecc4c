// The same kernel compiled with -mavx2 -mfma (see setup.py).
#include "depthwise_cpu.cpp"
