// Package deploy holds no code. Its tests check the files of the multi-node
// stack against each other and against what dmonitor writes:
// docker-compose.yml and the Dockerfile at the repository root, the
// evaluators' configuration tree in deploy/dmonitor, the image's default
// configuration in deploy/image, and Grafana's provisioning in
// deploy/grafana.
package deploy
