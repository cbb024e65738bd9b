#!/bin/sh
# The plugin boundary (DESIGN.md: "a plugin sees only the plugin API
# header"), checked on the sources and on the built libraries. The build
# already leaves core/ off the plugins' include path; this also refuses what
# that cannot see:
#  1. a public header (include/sluice/) that includes anything but system
#     headers and its siblings;
#  2. a plugin (plugins/, tests/plugins/) that includes a header that is
#     neither sluice/... nor one of plugins/ or its own directory (e.g.
#     "../core/config.h", spelled out past the include path);
#  3. a symbol of the engine (core/libsluice.a) that a plugin links against
#     without it being declared in include/sluice/ (a plugin that declares
#     an engine function itself).
# TAP on stdout; run by `make check` with SLUICE_SRCDIR and SLUICE_BUILDDIR.
set -u
src=${SLUICE_SRCDIR:?} build=${SLUICE_BUILDDIR:?}
echo "1..3"

# quoted includes of the files $@ as "file: header" lines
quoted_includes() {
    for f in "$@"; do
        sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f" |
            while read -r h; do echo "$f: $h"; done
    done
}

bad=$(quoted_includes "$src"/include/sluice/*.h | grep -v ': sluice/[a-z_]*\.h$')
if [ -z "$bad" ]; then
    echo "ok 1 - include/sluice/ includes only system headers and sluice/"
else
    echo "not ok 1 - include/sluice/ includes only system headers and sluice/"
    echo "$bad" | sed 's/^/# /'
fi

bad=$(quoted_includes "$src"/plugins/*.c "$src"/plugins/*.h "$src"/tests/plugins/*.c |
    while IFS= read -r line; do
        f=${line%%: *} h=${line#*: }
        case $h in
        sluice/*/* | */../* | ../*) echo "$line" ;;
        sluice/*) ;;
        */*) echo "$line" ;;
        *) [ -f "$(dirname "$f")/$h" ] || [ -f "$src/plugins/$h" ] || echo "$line" ;;
        esac
    done)
if [ -z "$bad" ]; then
    echo "ok 2 - plugins include only sluice/ and plugins/ headers"
else
    echo "not ok 2 - plugins include only sluice/ and plugins/ headers"
    echo "$bad" | sed 's/^/# /'
fi

libs="$build/plugins/libplugins.a $build/tests/plugins/libtestplugins.a"
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
grep -ohE '\bsl_[a-z0-9_]+[[:space:]]*\(' "$src"/include/sluice/*.h |
    sed 's/[[:space:]]*($//' | sort -u >"$tmp/api"
if nm -u $libs >"$tmp/nm-needs" && nm -g --defined-only "$build/core/libsluice.a" >"$tmp/nm-core"; then
    awk '{print $NF}' "$tmp/nm-needs" | sort -u >"$tmp/needs"
    awk 'NF == 3 {print $3}' "$tmp/nm-core" | sort -u >"$tmp/core"
    comm -12 "$tmp/needs" "$tmp/core" >"$tmp/taken"
    bad=$(comm -23 "$tmp/taken" "$tmp/api")
    n=$(wc -l <"$tmp/taken")
    if [ -z "$bad" ] && [ "$n" -gt 0 ]; then
        echo "ok 3 - the $n engine symbols the plugins link against are all in include/sluice/"
    else
        echo "not ok 3 - the engine symbols the plugins link against are all in include/sluice/"
        echo "$bad" | sed 's/^/# not in the plugin API: /'
    fi
else
    echo "not ok 3 - nm could not read the libraries ($libs core/libsluice.a)"
fi
