# Thin wrapper over CMake. `make run` and `make test` each work alone on a
# fresh Debian 12 machine: both install what is missing first.
#
#   make deps    install the Debian packages (apt-get, only what is missing)
#   make all     release build in build/
#   make run     build and start mixd with demo traffic
#   make test    every test: release, ASan+UBSan, TSan (threaded), fuzz
#   make bench   the benchmark suite (bench/README.md)
#   make clean   remove every build directory

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CTEST = ctest --output-on-failure -j$(JOBS)

.PHONY: all deps run test test-release test-asan test-tsan test-fuzz bench clean

all: deps
	cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build build -j$(JOBS)

deps:
	@./tools/install-deps.sh

run: all
	./tools/run-demo.sh

test: deps test-release test-asan test-tsan test-fuzz

test-release: all
	cd build && $(CTEST)

test-asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DMIXD_SANITIZE=address >/dev/null
	cmake --build build-asan -j$(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 $(CTEST)

test-tsan: deps
	cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMIXD_SANITIZE=thread >/dev/null
	cmake --build build-tsan -j$(JOBS)
	cd build-tsan && TSAN_OPTIONS=halt_on_error=1 $(CTEST) -L threaded

test-fuzz: deps
	CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
		-DMIXD_SANITIZE=address -DMIXD_FUZZ=ON >/dev/null
	cmake --build build-fuzz -j$(JOBS)
	cd build-fuzz && $(CTEST) -L fuzz

bench: all
	./bench/run.sh build

clean:
	rm -rf build build-asan build-tsan build-fuzz
