"""The local development stack: etcd + kube-apiserver, Azurite, the local Batch service and the operator.

Modules: :mod:`.system` (apt/npm prerequisites), :mod:`.kubebuild` (build and cache kube-apiserver),
:mod:`.procs` (process supervision with pid files), :mod:`.ports` (free ports), :mod:`.kube` (etcd +
kube-apiserver + kubeconfig + CRDs), :mod:`.azurite` (Azurite install and run), :mod:`.stack` (up/down/status),
:mod:`.images` (the container engine, and images built locally without a registry), :mod:`.product_images` (the
operator image and the word-count sample's image, rebuilt by content hash; pruning by label).
"""
