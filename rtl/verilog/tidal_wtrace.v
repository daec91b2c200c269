// tidal_wtrace: simulation-only writer of one core's memory-write trace (see docs/cosim.md).
//
// rtl.gen places one in every core when asked for the write trace (rtl.gen --write-trace);
// without it the design has no such instance and pays nothing. When the plusarg
// +TIDAL_WTRACE=<dir> is given, every cycle in which the core's tensor RAM or accumulator
// store is written adds a line to "<dir>/<%m>.txt" (one file per instance, named by its
// hierarchical name, like tidal_mem's images):
//
//     <inference> <cycle> <core> tram <addr> <data>
//     <inference> <cycle> <core> acc <addr> <data>
//
// decimal except <data>, the written word in hexadecimal (lane 0 in the lowest bits).
// <inference> counts start pulses from 0 and <cycle> counts from the inference's cycle 0,
// exactly as the top's cycle port. Without the plusarg the module does nothing. The file
// is flushed whenever the core is quiet, so it is complete at every done.
//
// generated from rtl/verilog/tidal_wtrace.v by rtl.gen -- edit that file, not a copy.
module tidal_wtrace #(
    parameter integer TRAM_AW = 1,
    parameter integer TRAM_W = 16,
    parameter integer ACC_AW = 1,
    parameter integer ACC_W = 32,
    parameter integer ID_W = 1
) (
    input                clk,
    input                rst,
    input                start,
    input   [ID_W-1:0]   core_id,
    input                quiet,
    input                tram_we,
    input   [TRAM_AW-1:0] tram_addr,
    input   [TRAM_W-1:0] tram_data,
    input                acc_we,
    input   [ACC_AW-1:0] acc_addr,
    input   [ACC_W-1:0]  acc_data
);
    reg [8*1024-1:0] dir;
    reg [8*1280-1:0] fname;
    integer fd;
    reg [31:0] starts;
    reg [31:0] cyc;
    reg counting;
    reg dirty;
    wire [31:0] inference = start ? starts : starts - 1;
    wire [31:0] cycle = start ? 32'd0 : cyc;

    initial begin
        fd = 0;
        if ($value$plusargs("TIDAL_WTRACE=%s", dir)) begin
            $sformat(fname, "%0s/%m.txt", dir);
            fd = $fopen(fname, "w");
        end
    end

    always @(posedge clk) begin
        if (rst) begin
            starts <= 0;
            cyc <= 0;
            counting <= 0;
            dirty <= 0;
        end else begin
            if (start)
                starts <= starts + 1;
            if (start | counting) begin
                cyc <= cycle + 1;
                counting <= 1;
            end
            if (fd != 0) begin
                if (tram_we)
                    $fwrite(fd, "%0d %0d %0d tram %0d %h\n", inference, cycle, core_id,
                            tram_addr, tram_data);
                if (acc_we)
                    $fwrite(fd, "%0d %0d %0d acc %0d %h\n", inference, cycle, core_id,
                            acc_addr, acc_data);
                if (quiet & (dirty | tram_we | acc_we)) begin
                    $fflush(fd);
                    dirty <= 0;
                end else if (tram_we | acc_we)
                    dirty <= 1;
            end
        end
    end
endmodule
