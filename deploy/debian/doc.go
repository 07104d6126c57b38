// Package debian holds no code. Its tests build the Debian package the way
// `make deb` does (build-deb, nfpm.yaml), inspect it with dpkg-deb, verify
// its systemd unit with systemd-analyze, and, as root on a machine where
// systemd does not run, install it for real and purge it again.
package debian
