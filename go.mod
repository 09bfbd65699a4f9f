module llmd-conformance/localcluster/etcd

go 1.24
