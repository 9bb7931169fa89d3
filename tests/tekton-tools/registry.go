package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/registry"
)

// registryReady is the line printed once the registry serves and every bundle is pushed.
type registryReady struct {
	Address string            `json:"address"`
	Bundles map[string]string `json:"bundles"`
}

func runRegistry(args []string) error {
	flags := flag.NewFlagSet("registry", flag.ContinueOnError)
	listen := flags.String("listen", "127.0.0.1:0", "loopback address to serve on")
	bundles := flags.String("bundles", "", "directory of bundle files (*.yaml), pushed at start")
	repository := flags.String("repository", "kubernaut/workflows", "repository path under the registry")
	readyFile := flags.String("ready-file", "", "also write the ready line to this file (atomically)")
	if err := flags.Parse(args); err != nil {
		return err
	}
	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	address := listener.Addr().String()
	server := &http.Server{Handler: registry.New(registry.Logger(log.New(os.Stderr, "registry: ", log.LstdFlags)))}
	served := make(chan error, 1)
	go func() { served <- server.Serve(listener) }()

	ready := registryReady{Address: address, Bundles: map[string]string{}}
	if *bundles != "" {
		files, err := filepath.Glob(filepath.Join(*bundles, "*.yaml"))
		if err != nil {
			return err
		}
		sort.Strings(files)
		for _, file := range files {
			stem := strings.TrimSuffix(filepath.Base(file), ".yaml")
			ref := fmt.Sprintf("%s/%s/%s:latest", address, strings.Trim(*repository, "/"), stem)
			digestRef, err := pushBundle(file, ref)
			if err != nil {
				return err
			}
			ready.Bundles[stem] = digestRef
		}
	}
	line, err := json.Marshal(ready)
	if err != nil {
		return err
	}
	fmt.Println(string(line))
	if *readyFile != "" {
		// Written aside and renamed, so a reader never sees half a line.
		if err := os.WriteFile(*readyFile+".tmp", append(line, '\n'), 0o600); err != nil {
			return err
		}
		if err := os.Rename(*readyFile+".tmp", *readyFile); err != nil {
			return err
		}
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-stop:
		return server.Close()
	case err := <-served:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}

func runPush(args []string) error {
	flags := flag.NewFlagSet("push", flag.ContinueOnError)
	file := flags.String("file", "", "bundle file (YAML, one or more Pipelines and Tasks)")
	ref := flags.String("ref", "", "reference to push to, e.g. 127.0.0.1:5000/workflows/x:v2")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if *file == "" || *ref == "" {
		return errors.New("--file and --ref are required")
	}
	digestRef, err := pushBundle(*file, *ref)
	if err != nil {
		return err
	}
	fmt.Println(digestRef)
	return nil
}
