// Flyway's ChecksumCalculator for one resource, as flyway-core computes it: CRC32 over the UTF-8 bytes of each
// line read by BufferedReader.readLine (line endings dropped), a BOM removed from the first line; printed as the
// signed int Flyway stores. Run as `java FlywayChecksum.java FILE...` (one checksum per line).
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.zip.CRC32;

public class FlywayChecksum {
    public static void main(String[] args) throws IOException {
        for (String arg : args) {
            CRC32 crc32 = new CRC32();
            try (BufferedReader reader = new BufferedReader(
                    new InputStreamReader(Files.newInputStream(Path.of(arg)), StandardCharsets.UTF_8), 4096)) {
                String line = reader.readLine();
                if (line != null) {
                    if (!line.isEmpty() && line.charAt(0) == '\ufeff') {
                        line = line.substring(1);
                    }
                    do {
                        crc32.update(line.getBytes(StandardCharsets.UTF_8));
                    } while ((line = reader.readLine()) != null);
                }
            }
            System.out.println((int) crc32.getValue());
        }
    }
}
