// tidal_mem: the one memory primitive of the tidal RTL (see docs/rtl.md).
//
// Synchronous read (address in cycle t, data in cycle t + 1), one write port; a read and a
// write of the same word in one cycle returns the old value (the machine's rule, see
// docs/architecture.md section 1). WIDTH and DEPTH are the only parameters, so every instance
// of one shape shares one Verilator model.
//
// Contents: zero, then, when the plusarg +TIDAL_MEMDIR=<dir> is given and the file exists,
// $readmemh of "<dir>/<%m>.hex", where %m is this instance's hierarchical name as the
// simulator prints it: tidal_top.core0.tram under Icarus, and TOP.tidal_top.core0.tram
// under the other one (a comment line must not start with its name: it reads those as
// pragmas). The name, not a parameter, selects the file: a per-instance parameter would
// make Verilator generate one model per instance.
//
// generated from rtl/verilog/tidal_mem.v by rtl.gen -- edit that file, not a copy.
module tidal_mem #(
    parameter integer WIDTH = 16,
    parameter integer DEPTH = 2
) (
    input                   clk,
    // One address bit even for DEPTH = 1, so that the port exists.
    input      [$clog2(DEPTH > 1 ? DEPTH : 2)-1:0] raddr,
    output reg [WIDTH-1:0]  rdata,
    input                   we,
    input      [$clog2(DEPTH > 1 ? DEPTH : 2)-1:0] waddr,
    input      [WIDTH-1:0]  wdata
);
    reg [WIDTH-1:0] mem [0:DEPTH-1];

    // The file name: up to 1 KiB of directory and hierarchical name.
    reg [8*1024-1:0] dir;
    reg [8*1280-1:0] fname;
    integer i;
    integer fd;
    initial begin
        rdata = {WIDTH{1'b0}};
        for (i = 0; i < DEPTH; i = i + 1)
            mem[i] = {WIDTH{1'b0}};
        if ($value$plusargs("TIDAL_MEMDIR=%s", dir)) begin
            $sformat(fname, "%0s/%m.hex", dir);
            // Probe first: a missing image means "all zero", which $readmemh would report
            // as an error under Verilator.
            fd = $fopen(fname, "r");
            if (fd != 0) begin
                $fclose(fd);
                $readmemh(fname, mem, 0);
            end
        end
    end

    always @(posedge clk) begin
        if (we)
            mem[waddr] <= wdata;
        rdata <= mem[raddr];
    end
endmodule
