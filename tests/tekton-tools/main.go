// Command tekton-tools is the test tool of the end-to-end tier.
//
//	tekton-tools registry --bundles DIR [--listen 127.0.0.1:0] [--repository kubernaut/workflows]
//	                      [--ready-file FILE]
//	    Serves go-containerregistry's in-process OCI registry on a loopback port, pushes every
//	    DIR/*.yaml as the Tekton bundle <address>/<repository>/<file stem>:latest, prints one JSON
//	    line {"address": ..., "bundles": {stem: reference by digest}} on stdout (and into FILE),
//	    then serves until killed.
//	tekton-tools push --file FILE --ref REFERENCE
//	    Pushes FILE as a Tekton bundle to REFERENCE (e.g. 127.0.0.1:5000/workflows/x:v2) and prints
//	    the reference by digest.
//	tekton-tools validate FILE...
//	    Runs Tekton's own SetDefaults and Validate on each PipelineRun file (YAML or JSON, decoded
//	    strictly: an unknown field is an error, where the API server would prune it silently).
//	    Exits 1 naming the file and the error.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "registry":
		err = runRegistry(os.Args[2:])
	case "push":
		err = runPush(os.Args[2:])
	case "validate":
		err = runValidate(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "tekton-tools %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: tekton-tools registry --bundles DIR [--listen ADDR] [--repository PATH] [--ready-file FILE]")
	fmt.Fprintln(os.Stderr, "       tekton-tools push --file FILE --ref REFERENCE")
	fmt.Fprintln(os.Stderr, "       tekton-tools validate FILE...")
	os.Exit(2)
}
