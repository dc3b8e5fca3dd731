package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	sdkerrors "github.com/aliyun/alibaba-cloud-sdk-go/sdk/errors"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/ecs"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/vpc"

	"github.com/terway-reconciler/terway/cloud/emulator"
)

// TestEmulatorCommand runs `terwayctl emulator` in-process as a user would:
// read the first stdout line, call the API with the SDK, dump the state
// with `terwayctl emulator dump`, and stop it.
func TestEmulatorCommand(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	cmd := emulatorCommand()
	cmd.SetOut(pw)
	cmd.SetErr(io.Discard)
	cmd.SetArgs([]string{"--attach-delay", "20ms", "--fault", "DescribeVSwitches=Throttling:1"})
	done := make(chan error, 1)
	go func() {
		done <- cmd.ExecuteContext(ctx)
		pw.Close()
	}()

	lines := bufio.NewReader(pr)
	first, err := lines.ReadString('\n')
	if err != nil {
		t.Fatalf("first line: %v (command ended: %v)", err, <-done)
	}
	go func() { _, _ = io.Copy(io.Discard, lines) }()
	var info emulator.Info
	if err := json.Unmarshal([]byte(first), &info); err != nil {
		t.Fatalf("first line is not the info JSON: %q: %v", first, err)
	}
	if !strings.HasPrefix(info.Endpoint, "127.0.0.1:") || !strings.HasPrefix(info.Metadata, "http://127.0.0.1:") ||
		info.RegionID != "cn-hangzhou" || info.AccessKeyID == "" || info.AccessKeySecret == "" || info.InstanceID == "" {
		t.Fatalf("info: %+v", info)
	}
	for _, key := range []string{`"endpoint"`, `"regionId"`, `"accessKeyId"`, `"accessKeySecret"`, `"instanceId"`, `"metadata"`} {
		if !strings.Contains(first, key) {
			t.Errorf("first line lacks %s: %s", key, first)
		}
	}

	c, err := ecs.NewClientWithAccessKey(info.RegionID, info.AccessKeyID, info.AccessKeySecret)
	if err != nil {
		t.Fatal(err)
	}
	c.Domain = info.Endpoint
	c.SetNoProxy("127.0.0.1")
	req := ecs.CreateDescribeInstanceAttributeRequest()
	req.InstanceId = info.InstanceID
	attr, err := c.DescribeInstanceAttribute(req)
	if err != nil || attr.Status != "Running" {
		t.Fatalf("DescribeInstanceAttribute: %v %+v", err, attr)
	}

	vc, err := vpc.NewClientWithAccessKey(info.RegionID, info.AccessKeyID, info.AccessKeySecret)
	if err != nil {
		t.Fatal(err)
	}
	vc.Domain = info.Endpoint
	vc.SetNoProxy("127.0.0.1")
	_, err = vc.DescribeVSwitches(vpc.CreateDescribeVSwitchesRequest())
	var se *sdkerrors.ServerError
	if !errors.As(err, &se) || se.ErrorCode() != "Throttling" {
		t.Errorf("--fault DescribeVSwitches=Throttling:1: got %v", err)
	}

	var out bytes.Buffer
	dump := emulatorDumpCommand()
	dump.SetOut(&out)
	dump.SetArgs([]string{"--endpoint", info.Endpoint})
	if err := dump.Execute(); err != nil {
		t.Fatalf("emulator dump: %v", err)
	}
	var d emulator.Dump
	if err := json.Unmarshal(out.Bytes(), &d); err != nil {
		t.Fatalf("dump output: %v: %s", err, out.String())
	}
	if d.Calls["DescribeInstanceAttribute"] != 1 || d.Faults["DescribeVSwitches"] != 1 || len(d.ENIs) != 1 {
		t.Errorf("dump: calls %v faults %v ENIs %d", d.Calls, d.Faults, len(d.ENIs))
	}

	bad := emulatorDumpCommand()
	bad.SetArgs([]string{"--endpoint", "10.0.0.1:80"})
	bad.SetOut(io.Discard)
	if err := bad.Execute(); err == nil {
		t.Error("dump accepted a non-loopback endpoint")
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("emulator command: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("emulator command did not stop")
	}
}

func TestParseFaults(t *testing.T) {
	got, err := parseFaults([]string{"AssignPrivateIpAddresses=Throttling:0.5", "AssignPrivateIpAddresses=drop:0.1", "*=latency:20ms"})
	if err != nil {
		t.Fatal(err)
	}
	if f := got["AssignPrivateIpAddresses"]; f.Code != "Throttling" || f.Rate != 0.5 || f.DropRate != 0.1 {
		t.Errorf("AssignPrivateIpAddresses: %+v", f)
	}
	if f := got["*"]; f.Latency != 20*time.Millisecond {
		t.Errorf("*: %+v", f)
	}
	for _, bad := range []string{"Throttling:1", "A=Throttling", "A=Throttling:2", "A=latency:soon", "=X:1"} {
		if _, err := parseFaults([]string{bad}); err == nil {
			t.Errorf("parseFaults(%q) accepted", bad)
		}
	}
}
