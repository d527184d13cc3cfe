/* k_init.c — start-up installation of the fast kernels (k_preview.h). */
#include "k_cpu.h"
#include "k_dequant.h"
#include "k_float.h"
#include "k_fused.h"
#include "k_kquants.h"
#include "k_preview.h"

void k_init(void)
{
    q_preview_set_tensor_fn(k_preview_hook);
    if (!k_cpu_get()->avx2)
        return; /* QTUNE_NO_SIMD=1 or no AVX2: the scalar references stay */
    q_format_set_fast(Q_FMT_Q8_0, k_quantize_q8_0);
    q_format_set_fast(Q_FMT_Q4_0, k_quantize_q4_0);
    q_format_set_fast(Q_FMT_Q4_1, k_quantize_q4_1);
    q_format_set_fast(Q_FMT_Q5_0, k_quantize_q5_0);
    q_format_set_fast(Q_FMT_Q5_1, k_quantize_q5_1);
    q_format_set_fast(Q_FMT_F16, k_quantize_f16);
    q_format_set_fast(Q_FMT_BF16, k_quantize_bf16);
    k_kquants_register();
    k_dequant_register();
}
