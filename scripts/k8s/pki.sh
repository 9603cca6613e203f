# Sourced by scripts/k8s-local.sh (its variables and say/die): the CA, certificates, tokens and kubeconfigs.
# shellcheck shell=bash

# ---------------------------------------------------------------- certificates and tokens

# first address of the service range: the `kubernetes` Service's ClusterIP
first_service_ip() { python3 -c 'import ipaddress,sys; print(ipaddress.ip_network(sys.argv[1])[1])' "$1"; }

# docker0's address: the apiserver advertises it (an Endpoints object refuses 127.0.0.1)
docker0_ip() { ip -4 -o addr show docker0 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}'; }

sign() { # sign NAME SUBJECT EXTFILE-CONTENT CA: a key and a certificate in $PKI signed by CA
    local name=$1 subj=$2 ext=$3 ca=$4
    openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
    openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
    printf '%s\n' "$ext" >"$PKI/$name.ext"
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" \
        -CAcreateserial -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
    rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

make_ca() {
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 -subj "/CN=$2" \
        -keyout "$PKI/$1.key" -out "$PKI/$1.crt" 2>/dev/null
}

kubeconfig() { # kubeconfig FILE TOKEN: the CA embedded, the token as the credential
    local ca
    ca=$(base64 -w0 "$PKI/ca.crt")
    umask 077
    cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: harness-k8s
  cluster:
    server: $API
    certificate-authority-data: $ca
users:
- name: harness-k8s
  user:
    token: $2
contexts:
- name: harness-k8s
  context: {cluster: harness-k8s, user: harness-k8s}
current-context: harness-k8s
EOF
}

ensure_pki() {
    mkdir -p "$PKI" "$RUN" "$LOG" "$STATE/kubeconfigs"
    chmod 700 "$STATE" "$PKI"
    [[ -f $PKI/ca.crt ]] || make_ca ca harness-k8s-ca
    [[ -f $PKI/front-proxy-ca.crt ]] || make_ca front-proxy-ca harness-k8s-front-proxy-ca
    local adv svc sans
    adv=$(docker0_ip)
    [[ -n $adv ]] || die "no docker0 bridge: pods live on it (is dockerd running?)"
    svc=$(first_service_ip "$SERVICE_CIDR")
    sans="subjectAltName=IP:127.0.0.1,IP:$adv,IP:$svc,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    # a changed service range or docker0 address needs a new serving certificate
    if [[ ! -f $PKI/apiserver.crt || "$(cat "$PKI/apiserver.sans" 2>/dev/null)" != "$sans" ]]; then
        sign apiserver /CN=kube-apiserver "$sans
extendedKeyUsage=serverAuth" ca
        echo "$sans" >"$PKI/apiserver.sans"
    fi
    # the apiserver's identity towards kubelets (logs, exec, port-forward)
    [[ -f $PKI/apiserver-kubelet-client.crt ]] ||
        sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" \
            "extendedKeyUsage=clientAuth" ca
    # for aggregated APIs (metrics-server, an adapter) should they be installed later
    [[ -f $PKI/front-proxy-client.crt ]] ||
        sign front-proxy-client /CN=front-proxy-client "extendedKeyUsage=clientAuth" front-proxy-ca
    if [[ ! -f $PKI/sa.key ]]; then
        openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
        openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
    fi
    # Static tokens (token,user,uid,"groups"): one identity per component, so RBAC's default
    # bindings and the Node authorizer apply as in a kubeadm cluster.
    if ! grep -qs ",system:node:$NODE," "$STATE/tokens.csv"; then
        local who user groups tok
        umask 077
        : >"$STATE/tokens.csv"
        for who in admin kube-controller-manager kube-scheduler kubelet kube-proxy; do
            case $who in
            admin) user=admin groups=system:masters ;;
            kubelet) user=system:node:$NODE groups=system:nodes ;;
            kube-proxy) user=system:kube-proxy groups= ;;
            *) user=system:$who groups= ;;
            esac
            tok=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
            echo "$tok,$user,$user,\"$groups\"" >>"$STATE/tokens.csv"
            if [[ $who == admin ]]; then
                kubeconfig "$STATE/kubeconfig" "$tok"
            else
                kubeconfig "$STATE/kubeconfigs/$who.conf" "$tok"
            fi
        done
    fi
}

admin_token() { grep ',admin,admin,' "$STATE/tokens.csv" | cut -d, -f1; }

# api PATH: GET against the apiserver with the admin token (CA verified)
api() {
    curl -fsS --max-time 5 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $(admin_token)" "$API$1"
}
