module github.com/apt-ostree/apt-ostree-factory

go 1.26.0

require (
	github.com/klauspost/compress v1.20.3
	golang.org/x/sys v0.49.0
	pault.ag/go/debian v0.21.0
)

require go.yaml.in/yaml/v3 v3.0.6 // indirect
