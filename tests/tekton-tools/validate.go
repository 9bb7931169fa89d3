package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	"knative.dev/pkg/apis"
	"sigs.k8s.io/yaml"
)

// runValidate applies what Tekton's admission webhook applies to a new PipelineRun — SetDefaults,
// then Validate, both in a create context — to each file. The decoding is strict: the API server
// would silently prune an unknown (e.g. misspelt) field of the structural CRD, which this reports.
func runValidate(files []string) error {
	if len(files) == 0 {
		return errors.New("no PipelineRun files given")
	}
	var failed []string
	for _, file := range files {
		if err := validatePipelineRun(file); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", file, err)
			failed = append(failed, file)
			continue
		}
		fmt.Printf("%s: valid\n", file)
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d of %d PipelineRuns invalid", len(failed), len(files))
	}
	return nil
}

func validatePipelineRun(file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var pr pipelinev1.PipelineRun
	if err := yaml.UnmarshalStrict(data, &pr); err != nil {
		return err
	}
	if pr.APIVersion != "tekton.dev/v1" || pr.Kind != "PipelineRun" {
		return fmt.Errorf("apiVersion/kind %s/%s, want tekton.dev/v1/PipelineRun", pr.APIVersion, pr.Kind)
	}
	ctx := apis.WithinCreate(context.Background())
	pr.SetDefaults(ctx)
	if errs := pr.Validate(ctx); errs != nil {
		return errs
	}
	return nil
}
