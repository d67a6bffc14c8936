// Independent re-implementation of BigDL PPML's file formats, used only to freeze test vectors.
//
// It is NOT BigDL code: the BigDL jars are not served by the Maven repository this project can reach.
// It runs on the same platform BigDL runs on (Scala 2.12 + the JDK's JCE + Jackson) and performs the
// operations BigDL's sources perform, so it pins the behaviour that depends on that platform:
//   * String.getBytes() key slicing, Cipher "AES/CBC/PKCS5Padding", Mac "HmacSHA256" (BigDLEncrypt)
//   * Cipher.getInstance("AES") = AES/ECB/PKCS5Padding for wrapping data keys (KeyLoader)
//   * Scala's `s += '0' + x` (appends the Int 48+x as decimal text) in SimpleKMS
//   * Jackson with INDENT_OUTPUT for the .meta file (KmsMetaFormat)
// Inputs are fixed (IVs included), so the output is reproducible byte for byte.

import java.io.{ByteArrayOutputStream, File, FileOutputStream}
import java.nio.ByteBuffer
import java.nio.charset.StandardCharsets
import java.util.{Arrays, Base64, LinkedHashMap => JMap}
import javax.crypto.{Cipher, Mac}
import javax.crypto.spec.{IvParameterSpec, SecretKeySpec}

import com.fasterxml.jackson.databind.{ObjectMapper, SerializationFeature}
import com.fasterxml.jackson.module.scala.DefaultScalaModule

case class KmsMeta(encryptedDataKey: String)

object MakeVectors {
  val HeaderSize = 400
  val Codec = 4096 // Hadoop io.file.buffer.size default: the chunking of BigDL's codec writer

  def bytes(n: Int, f: Int => Int): Array[Byte] = Array.tabulate(n)(i => f(i).toByte)
  def b64(b: Array[Byte]): String = Base64.getEncoder.encodeToString(b)
  def hex(b: Array[Byte]): String = b.map(x => f"${x & 0xff}%02x").mkString

  // KeyLoader: wrap the data-key string's UTF-8 with Cipher.getInstance("AES") under the primary key.
  def wrapPlain(primaryB64: String, dataKey: String): String = {
    val c = Cipher.getInstance("AES")
    c.init(Cipher.ENCRYPT_MODE, new SecretKeySpec(Base64.getDecoder.decode(primaryB64), "AES"))
    b64(c.doFinal(dataKey.getBytes(StandardCharsets.UTF_8)))
  }

  // SimpleKMS, written with the same Scala expression shape whose semantics we need to pin.
  def simpleWrap(pk: String, digits: String): String = {
    var ct = ""
    for (i <- 0 until 16) { ct += '0' + ((pk(i) - '0') + (digits(i) - '0')) % 10 }
    ct
  }
  def simpleUnwrap(pk: String, ct: String): String = {
    var pt = ""
    for (i <- 0 until 16) { pt += '0' + ((ct(i) - '0') - (pk(i) - '0') + 10) % 10 }
    pt
  }

  // The "common" container: 400-byte header, CBC over the whole stream, HMAC over the ciphertext only.
  def common(dataKey: String, edk: String, iv: Array[Byte], plain: Array[Byte]): Array[Byte] = {
    val secret = dataKey.getBytes()
    val cipher = Cipher.getInstance("AES/CBC/PKCS5Padding")
    cipher.init(Cipher.ENCRYPT_MODE, new SecretKeySpec(Arrays.copyOfRange(secret, 16, 32), "AES"),
      new IvParameterSpec(iv))
    val mac = Mac.getInstance("HmacSHA256")
    mac.init(new SecretKeySpec(Arrays.copyOfRange(secret, 0, 16), "HmacSHA256"))
    val edkBytes = edk.getBytes(StandardCharsets.UTF_8)
    val header = ByteBuffer.allocate(HeaderSize)
    header.putInt(edkBytes.length).putInt(iv.length).put(edkBytes).put(iv)
    while (header.hasRemaining) header.put(0x80.toByte)
    val out = new ByteArrayOutputStream()
    out.write(header.array())
    var off = 0
    while (plain.length - off > Codec) {
      val ct = cipher.update(plain, off, Codec)
      mac.update(ct)
      out.write(ct)
      off += Codec
    }
    val last = cipher.doFinal(plain, off, plain.length - off)
    out.write(last)
    out.write(mac.doFinal(last))
    out.toByteArray
  }

  // "nativeaescbc": raw IV, then CBC under the base64-decoded data key; no MAC.
  def native(dataKeyB64: String, iv: Array[Byte], plain: Array[Byte]): Array[Byte] = {
    val cipher = Cipher.getInstance("AES/CBC/PKCS5Padding")
    cipher.init(Cipher.ENCRYPT_MODE, new SecretKeySpec(Base64.getDecoder.decode(dataKeyB64), "AES"),
      new IvParameterSpec(iv))
    iv ++ cipher.doFinal(plain)
  }

  def main(args: Array[String]): Unit = {
    val dir = new File(args(0))
    dir.mkdirs()
    def save(name: String, data: Array[Byte]): Unit = {
      val f = new FileOutputStream(new File(dir, name)); f.write(data); f.close()
    }
    val csv = "name,age,job\nalice,30,engineer\nbob,41,analyst\n".getBytes(StandardCharsets.UTF_8)
    val big = bytes(70001, i => (i * 31 + 7) % 251)
    val iv1 = bytes(16, i => 0x10 + i)
    val iv2 = bytes(16, i => 0xf0 - 7 * i)

    val primary = b64(bytes(16, i => 0x41 + 3 * i))
    val dk24 = b64(bytes(16, i => 0xa0 + 5 * i))
    val edk24 = wrapPlain(primary, dk24)
    val appId = "123456789012"
    val simplePk = appId + "3456"
    val digits = "0918273645546372"
    val simpleCt = simpleWrap(simplePk, digits)
    val simpleDk = simpleUnwrap(simplePk, simpleCt)
    val dk44 = b64(bytes(32, i => 0x30 + 7 * i))
    val edk344 = b64(bytes(256, i => (i * 13 + 5) % 256))
    val native16 = b64(bytes(16, i => 0x61 + i))
    val native32 = b64(bytes(32, i => 0x99 - 3 * i))

    val mapper = new ObjectMapper()
    mapper.registerModule(DefaultScalaModule)
    mapper.configure(SerializationFeature.INDENT_OUTPUT, true)
    val vectors = new java.util.ArrayList[JMap[String, Object]]()
    def record(file: String, format: String, plain: Array[Byte], dataKey: String, edk: String,
               iv: Array[Byte], extra: (String, Object)*): Unit = {
      val m = new JMap[String, Object]()
      m.put("file", file); m.put("format", format)
      if (plain.length > 4096) {
        m.put("plaintext_pattern", "bytes((i * 31 + 7) % 251 for i in range(70001))")
      } else m.put("plaintext_hex", hex(plain))
      m.put("data_key", dataKey)
      if (edk != null) m.put("encrypted_data_key", edk)
      m.put("iv_hex", hex(iv))
      extra.foreach { case (k, v) => m.put(k, v) }
      vectors.add(m)
    }

    save("common_plainkey_csv.cbc", common(dk24, edk24, iv1, csv))
    record("common_plainkey_csv.cbc", "common", csv, dk24, edk24, iv1,
      "key_source" -> "plaintext_primary", "primary_key" -> primary)
    save("common_plainkey_empty.cbc", common(dk24, edk24, iv2, Array.emptyByteArray))
    record("common_plainkey_empty.cbc", "common", Array.emptyByteArray, dk24, edk24, iv2,
      "key_source" -> "plaintext_primary", "primary_key" -> primary)
    save("common_plainkey_70001.cbc", common(dk24, edk24, iv1, big))
    record("common_plainkey_70001.cbc", "common", big, dk24, edk24, iv1,
      "key_source" -> "plaintext_primary", "primary_key" -> primary)
    save("common_simplekms_csv.cbc", common(simpleDk, simpleCt, iv2, csv))
    record("common_simplekms_csv.cbc", "common", csv, simpleDk, simpleCt, iv2,
      "key_source" -> "simple_kms", "primary_material" -> simplePk, "app_id" -> appId,
      "digits" -> digits)
    save("common_longedk_csv.cbc", common(dk44, edk344, iv1, csv))
    record("common_longedk_csv.cbc", "common", csv, dk44, edk344, iv1, "key_source" -> "opaque")
    save("native_aes128_csv.cbc", native(native16, iv1, csv))
    record("native_aes128_csv.cbc", "nativeaescbc", csv, native16, null, iv1)
    save("native_aes256_70001.cbc", native(native32, iv2, big))
    record("native_aes256_70001.cbc", "nativeaescbc", big, native32, null, iv2)

    val meta = mapper.writeValueAsString(KmsMeta(edk24)) + "\n" // KeyReaderWriter appends "\n"
    save("plainkey.meta", meta.getBytes(StandardCharsets.UTF_8))

    val doc = new JMap[String, Object]()
    doc.put("generator", "bench/peers/bigdl/make_vectors/MakeVectors.scala (not the BigDL jar)")
    doc.put("meta", java.util.Map.of("file", "plainkey.meta", "encrypted_data_key", edk24))
    doc.put("vectors", vectors)
    save("vectors.json", (mapper.writeValueAsString(doc) + "\n").getBytes(StandardCharsets.UTF_8))
  }
}
