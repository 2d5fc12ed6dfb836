# Sourced by scripts/test.sh and .ci/run: build settings shared by every cargo command.
#
# RocksDB's bundled C++ takes ~13 minutes to compile on two cores, and cargo compiles it
# again whenever the set of packages in a command changes the features of the build
# script's own dependencies (clippy, the workspace tests and the Jepsen-style suite
# select different sets). ccache makes every compile after the first a cache hit.
if command -v ccache >/dev/null 2>&1; then
  export CC="ccache gcc" CXX="ccache g++"
  export CCACHE_DIR="${CCACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/seat-ledger-ccache}"
  export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"
  # RocksDB's build uses absolute paths of the cargo registry and OUT_DIR; hash
  # relative to them so that other target directories hit the same entries.
  export CCACHE_BASEDIR="${CCACHE_BASEDIR:-/}"
  export CCACHE_NOHASHDIR=1
fi
