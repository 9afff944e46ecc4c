// The same kernel compiled with -mavx2 -mfma (see setup.py): 8-wide exps.
#include "selective_scan_cpu.cpp"
