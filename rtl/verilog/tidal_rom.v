// tidal_rom: the function table of the function unit (rtl/function.py, docs/rtl.md).
//
// PORTS synchronous read ports (address in cycle t, data in cycle t + 1), no write port.
// Contents: $readmemh of "<dir>/tidal_fn_table.hex" with the plusarg +TIDAL_MEMDIR=<dir>,
// the file rtl.gen.write_memory_images writes beside the memory images (the same for every
// program: isa.functions.table()). A missing file stops the simulation: a function unit
// without its table would compute wrong results silently. Loading at time 0 rather than
// from an initial block of constants keeps the table out of the compiled model.
//
// generated from rtl/verilog/tidal_rom.v by rtl.gen -- edit that file, not a copy.
module tidal_rom #(
    parameter integer WIDTH = 32,
    parameter integer DEPTH = 2,
    parameter integer PORTS = 1
) (
    input                            clk,
    input      [PORTS*$clog2(DEPTH)-1:0] raddr,
    output reg [PORTS*WIDTH-1:0]     rdata
);
    localparam integer AW = $clog2(DEPTH);
    reg [WIDTH-1:0] mem [0:DEPTH-1];

    reg [8*1024-1:0] dir;
    reg [8*1280-1:0] fname;
    integer fd;
    integer p;
    initial begin
        rdata = {PORTS*WIDTH{1'b0}};
        if (!$value$plusargs("TIDAL_MEMDIR=%s", dir))
            $fatal(1, "tidal_rom: no +TIDAL_MEMDIR=<dir> holding tidal_fn_table.hex");
        $sformat(fname, "%0s/tidal_fn_table.hex", dir);
        fd = $fopen(fname, "r");
        if (fd == 0)
            $fatal(1, "tidal_rom: %0s is missing", fname);
        $fclose(fd);
        $readmemh(fname, mem, 0);
    end

    always @(posedge clk) begin
        for (p = 0; p < PORTS; p = p + 1)
            rdata[p*WIDTH +: WIDTH] <= mem[raddr[p*AW +: AW]];
    end
endmodule
