# qtune — build, test, bench, fuzz.  `make V=1` shows the commands.
#
#   make            build ./qtune
#   make deps       install the Debian packages qtune needs (apt-get, sudo if not root)
#   make run        generate samples/sample.gguf if missing and open it
#   make test       unit suites, CLI tests, unit suites under ASan+UBSan, fuzzers, and
#                   where nvcc is found the CUDA build's suites (make cudatest)
#   make asan       unit suites under ASan+UBSan only
#   make fuzz       every libFuzzer target for FUZZ_SECONDS (default 60) each
#   make bench      benchmarks (print figures and the baseline measured in the same run)
#   make cuda       build-cuda/qtune: also compile and link kernels/*.cu with nvcc
#                   (same as make CUDA=1 B=build-cuda BIN=build-cuda/qtune)
#   make cudatest   make cuda, then its GPU suites: on a GPU against the device, and
#                   everywhere against the host emulation of the preview kernels
#   make WERROR=1   warnings are errors (CI)

CC      ?= gcc
NVCC    ?= nvcc
CUDA    ?= 0
WERROR  ?= 0
FUZZ_SECONDS ?= 60
OPT     ?= -O2

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
        -Wcast-align -Wwrite-strings -Wundef
ifeq ($(WERROR),1)
WARN += -Werror
endif

CPPFLAGS += -D_GNU_SOURCE -Iquant -Ikernels -Ianalysis -Itui
SAN      ?=
CFLAGS   += -std=c11 $(OPT) -g -fopenmp $(WARN) -MMD -MP $(SAN)
# No BLAS here: analysis/an_blas.c opens OpenBLAS when the forward pass or the
# calibration first multiplies (its constructor costs ~3.5 ms at every start).
LDLIBS   += -Wl,--as-needed -ljansson -lcsv -lm -lreadline -lncursesw -lpthread
LDFLAGS  += -fopenmp $(SAN)

ifeq ($(V),1)
Q :=
else
Q := @
endif

LIB_SRC := $(wildcard quant/*.c) $(wildcard kernels/*.c) $(wildcard analysis/*.c)
APP_SRC := $(wildcard tui/*.c)
CU_SRC  := $(wildcard kernels/*.cu)
TEST_SRC := $(wildcard tests/test_*.c)
TOOL_SRC := $(wildcard tests/tool_*.c)
FUZZ_SRC := $(wildcard tests/fuzz_*.c)

B   ?= build
BIN ?= qtune
LIB_OBJ := $(LIB_SRC:%.c=$(B)/%.o)
APP_OBJ := $(APP_SRC:%.c=$(B)/%.o)
TESTS   := $(TEST_SRC:tests/%.c=$(B)/tests/%)
TOOLS   := $(TOOL_SRC:tests/%.c=$(B)/tests/%)

ifeq ($(CUDA),1)
CUDA_HOME ?= $(patsubst %/bin/,%,$(dir $(shell command -v $(NVCC))))
CPPFLAGS  += -DQTUNE_CUDA=1
NVCCFLAGS ?= -O2 -std=c++17 -arch=sm_90 -Xcompiler -fPIC
CU_OBJ    := $(CU_SRC:%.cu=$(B)/%.cu.o)
LDLIBS    += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart -lstdc++
else
CU_OBJ    :=
endif

.PHONY: all deps run test unit cli tools cuda cudatest asan fuzz bench clean
all: $(BIN)

$(BIN): $(APP_OBJ) $(B)/libqtune.a
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS) -o $@ $(APP_OBJ) $(B)/libqtune.a $(LDLIBS)

$(B)/libqtune.a: $(LIB_OBJ) $(CU_OBJ)
	@echo "  AR      $@"
	$(Q)rm -f $@ && ar rcs $@ $^

# Rebuild everything when the configuration changes (CUDA=1, WERROR=1, OPT...).
$(B)/config.stamp: FORCE
	@mkdir -p $(B)
	@echo '$(CC) $(CFLAGS) $(CPPFLAGS) $(CUDA) $(NVCCFLAGS)' | cmp -s - $@ || \
	    echo '$(CC) $(CFLAGS) $(CPPFLAGS) $(CUDA) $(NVCCFLAGS)' > $@
FORCE:

$(B)/%.o: %.c $(B)/config.stamp
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

# The kernels equal the CPU references bit for bit only with IEEE division and
# square root and subnormals kept: those flags come after NVCCFLAGS, which
# cannot undo them (--use_fast_math included). Their host copies (the
# emulation of k_cuda_fused.cu) likewise need the host compiler not to
# contract products and sums into FMAs.
$(B)/%.cu.o: %.cu $(B)/config.stamp
	@mkdir -p $(dir $@)
	@echo "  NVCC    $<"
	$(Q)$(NVCC) $(NVCCFLAGS) -ftz=false -prec-div=true -prec-sqrt=true \
	    -Xcompiler -ffp-contract=off -MMD -MP -Iquant -Ikernels -DQTUNE_CUDA=1 -c -o $@ $<

$(B)/tests/%: tests/%.c $(B)/libqtune.a
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -o $@ $< $(B)/libqtune.a $(LDLIBS) -lcmocka $(LDFLAGS)

samples/sample.gguf: | qtune
	./qtune sample -o $@

run: qtune samples/sample.gguf
	./qtune samples/sample.gguf

# Debian packages the build and the tests use (DESIGN.md §8).
DEB_PACKAGES := build-essential libncurses-dev libcsv-dev libreadline-dev libcmocka-dev \
                libjansson-dev libopenblas-dev liblapacke-dev clang libclang-rt-14-dev tmux \
                python3-venv python3-pip
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
deps:
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq --no-install-recommends $(DEB_PACKAGES)

# ---- tests ----
# Suites with SIMD paths run a second time capped at AVX2 on an AVX-512
# machine, so both forms are checked against the scalar references.
SIMD_TESTS := $(filter %/test_stats %/test_preview %/test_kquants_fast,$(TESTS))
HAVE_AVX512 := $(shell grep -q 'avx512bw' /proc/cpuinfo 2>/dev/null && echo 1)
unit: $(TESTS)
	@set -e; for t in $(TESTS); do echo "== $$t"; QTUNE_MODELS=../shared/models $$t; done
	@set -e; if [ -n "$(HAVE_AVX512)" ]; then for t in $(SIMD_TESTS); do \
	    echo "== $$t (QTUNE_NO_AVX512=1)"; QTUNE_NO_AVX512=1 QTUNE_MODELS=../shared/models $$t; \
	done; fi

# Test tools (tests/tool_*.c): small programs on libqtune that scripts drive.
tools: $(TOOLS)

cli: qtune tools
	@bash tests/cli/run.sh

test: unit cli asan fuzz cudatest
	@echo "make test: all suites passed"

# `make CUDA=1` builds into build-cuda/ so CPU and CUDA objects never mix.
cuda:
	$(Q)$(MAKE) --no-print-directory CUDA=1 B=build-cuda BIN=build-cuda/qtune build-cuda/qtune \
	    $(TEST_SRC:tests/%.c=build-cuda/tests/%) $(TOOL_SRC:tests/%.c=build-cuda/tests/%)

# The CUDA build's GPU suites. Without a GPU, test_cuda skips and
# test_cuda_fused runs its tests on the emulated device (k_cuda_fused_emulate:
# the kernels' own code on the host), as does test_preview's exact pass with
# QTUNE_TEST_EMULATE=1; without nvcc nothing runs.
NVCC_PATH := $(or $(shell command -v $(NVCC) 2>/dev/null),\
                  $(wildcard /usr/local/cuda/bin/nvcc))
cudatest:
ifeq ($(NVCC_PATH),)
	@echo "== nvcc not found: the CUDA suites are skipped"
else
	$(Q)PATH="$$PATH:$(dir $(NVCC_PATH))" $(MAKE) --no-print-directory cuda
	@set -e; for t in build-cuda/tests/test_cuda build-cuda/tests/test_cuda_fused; do \
	    echo "== $$t"; QTUNE_MODELS=../shared/models $$t; done
	@echo "== build-cuda/tests/test_preview (QTUNE_TEST_EMULATE=1)"
	@QTUNE_TEST_EMULATE=1 QTUNE_MODELS=../shared/models build-cuda/tests/test_preview
endif

# Unit suites again, built with ASan+UBSan into their own tree.
asan:
	$(Q)$(MAKE) --no-print-directory B=build-asan OPT=-O1 \
	    SAN='-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all' unit

FUZZ_LIB := $(LIB_SRC:%.c=build-fuzz/%.o)
FUZZERS  := $(FUZZ_SRC:tests/%.c=build-fuzz/%)
FUZZ_CFLAGS := -std=c11 -O1 -g -fopenmp -fsanitize=address,undefined,fuzzer-no-link \
               -fno-sanitize-recover=all -D_GNU_SOURCE -Iquant -Ikernels -Ianalysis -MMD -MP

build-fuzz/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CLANG   $<"
	$(Q)clang $(FUZZ_CFLAGS) -c -o $@ $<

build-fuzz/fuzz_%: tests/fuzz_%.c $(FUZZ_LIB)
	@echo "  CLANG   $<"
	$(Q)clang $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_LIB) $(LDLIBS) -fopenmp

.SECONDARY: $(FUZZ_LIB)

fuzz: $(FUZZERS)
	@set -e; for f in $(FUZZERS); do \
	    name=$$(basename $$f); corpus=build-fuzz/corpus/$$name; mkdir -p $$corpus; \
	    seed=tests/fuzz/seed_$${name#fuzz_}.sh; [ -f $$seed ] && bash $$seed $$corpus; \
	    echo "== $$name for $(FUZZ_SECONDS) s"; \
	    $$f -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -print_final_stats=1 \
	        $$corpus 2>build-fuzz/$$name.log \
	        || { tail -50 build-fuzz/$$name.log; exit 1; }; \
	    grep -E 'stat::number_of_executed_units|Done' build-fuzz/$$name.log | tail -2; \
	done

bench: qtune
	@bash tests/bench/run.sh

clean:
	rm -rf build build-asan build-cuda build-fuzz qtune

-include $(shell find $(B) build-fuzz -name '*.d' 2>/dev/null)
