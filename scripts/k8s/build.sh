# Sourced by scripts/k8s-local.sh (its variables and say/die): compiling the five binaries and pause once.
# shellcheck shell=bash

built() {
    local c
    for c in "${COMPONENTS[@]}" pause; do [[ -x $BIN/$c ]] || return 1; done
}

build() {
    if built; then
        say "binaries cached in $BIN"
        return 0
    fi
    local t0=$SECONDS
    if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ /etc/apt/sources.list; then
        say "enabling deb-src for bookworm"
        cat >/etc/apt/sources.list.d/harness-k8s-src.sources <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        apt-get update -qq
    fi
    local pkgs=() p
    # rsync: the make places its binaries with it
    for p in golang-go etcd-server build-essential openssl rsync golang-github-modern-go-reflect2-dev; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            pkgs+=("$p")
    done
    if ((${#pkgs[@]})); then
        say "installing ${pkgs[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
    fi
    local src=$CACHE/src
    local tree=$src/kubernetes-$K8S_VERSION
    if [[ ! -f $tree/Makefile ]]; then
        say "fetching the Debian source package kubernetes $K8S_VERSION"
        rm -rf "$src" && mkdir -p "$src"
        (cd "$src" && apt-get source -qq "kubernetes=$DEB_SRC_VERSION" >/dev/null)
        tree=$(find "$src" -maxdepth 1 -type d -name 'kubernetes-*' | head -1)
        [[ -f $tree/Makefile ]] || die "no source tree under $src"
        if [[ $tree != "$src/kubernetes-$K8S_VERSION" ]]; then mv "$tree" "$src/kubernetes-$K8S_VERSION"; fi
        tree=$src/kubernetes-$K8S_VERSION
    fi
    say "patching the OOM score adjustments"
    sed -E -i -f "$PATCH_SED" "$tree/pkg/kubelet/dockershim/docker_sandbox.go" "$tree/pkg/kubelet/qos/policy.go"
    grep -Eq 'defaultSandboxOOMAdj\s+int\s*=\s*0\b' "$tree/pkg/kubelet/dockershim/docker_sandbox.go" ||
        die "patch did not apply to docker_sandbox.go"
    grep -Eq 'guaranteedOOMScoreAdj\s+int\s*=\s*0\b' "$tree/pkg/kubelet/qos/policy.go" ||
        die "patch did not apply to qos/policy.go"
    dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev | grep -q "^$REFLECT2_VERSION" ||
        die "golang-github-modern-go-reflect2-dev is not $REFLECT2_VERSION"
    rsync -a --delete --exclude='*_test.go' /usr/share/gocode/src/github.com/modern-go/reflect2/ \
        "$tree/vendor/github.com/modern-go/reflect2/"
    local gopath=$CACHE/gopath
    mkdir -p "$gopath/src/k8s.io"
    ln -sfn "$tree" "$gopath/src/k8s.io/kubernetes"
    say "building ${COMPONENTS[*]} (nice 10; about 10 min on 2 cores)"
    local what=()
    for p in "${COMPONENTS[@]}"; do what+=("cmd/$p"); done
    (
        cd "$gopath/src/k8s.io/kubernetes" || exit 1
        export GOPATH=$gopath GOCACHE=$CACHE/gocache CGO_ENABLED=0 GOFLAGS=-trimpath
        export KUBE_GIT_VERSION=v$K8S_VERSION KUBE_GIT_TREE_STATE=clean KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20
        nice -n 10 make WHAT="${what[*]}" GOLDFLAGS="-s -w"
    )
    local out=$tree/_output/local/bin/linux/amd64
    mkdir -p "$BIN.tmp"
    for p in "${COMPONENTS[@]}"; do cp "$out/$p" "$BIN.tmp/$p"; done
    say "building the pause binary (static)"
    gcc -Os -static -DVERSION=3.4 -o "$BIN.tmp/pause" "$tree/build/pause/linux/pause.c"
    strip "$BIN.tmp/pause"
    rm -rf "$BIN" && mkdir -p "$(dirname "$BIN")" && mv "$BIN.tmp" "$BIN"
    say "built in $((SECONDS - t0)) s: $BIN"
}
